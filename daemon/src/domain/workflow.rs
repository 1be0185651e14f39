//! Workflows as pure logic: the checks a workflow passes before any of it is stored (names,
//! needs, cycles, references), and the substitution of the results of earlier steps into a
//! step's payload (`${steps.ID.result…}`) when it runs.

use std::collections::{HashMap, HashSet};

use serde_json::Value;
use taskplane_api::{MAX_DEPENDENCIES, MAX_WORKFLOW_STEPS, WorkflowSpec};

use super::validate::{ValidationError, valid_name};

const OPEN: &str = "${steps.";

/// What a workflow is refused with, besides a bad name (`invalid_name`).
const INVALID: &str = "invalid_workflow";

/// A reference to an earlier step's result: `${steps.STEP.result}` and a path into it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reference {
    pub step: String,
    /// Object keys, or array indexes, from the result down.
    pub path: Vec<String>,
}

impl std::fmt::Display for Reference {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "${{steps.{}.result", self.step)?;
        for key in &self.path {
            write!(f, ".{key}")?;
        }
        f.write_str("}")
    }
}

/// A payload string in pieces: text as it is, and references.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece<'a> {
    Text(&'a str),
    Ref(Reference),
}

/// Splits `text` at its references. A step id may hold dots, so the step is the longest
/// part before a `.result` that names a step (`is_step`).
fn pieces<'a>(text: &'a str, is_step: &dyn Fn(&str) -> bool) -> Result<Vec<Piece<'a>>, String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find(OPEN) {
        if start > 0 {
            out.push(Piece::Text(&rest[..start]));
        }
        let body_at = start + OPEN.len();
        let Some(len) = rest[body_at..].find('}') else {
            return Err(format!(
                "'{}' is not closed with '}}'",
                clip(&rest[start..])
            ));
        };
        let body = &rest[body_at..body_at + len];
        out.push(Piece::Ref(reference(body, is_step)?));
        rest = &rest[body_at + len + 1..];
    }
    if !rest.is_empty() {
        out.push(Piece::Text(rest));
    }
    Ok(out)
}

/// The reference `${steps.BODY}`.
fn reference(body: &str, is_step: &dyn Fn(&str) -> bool) -> Result<Reference, String> {
    let whole = format!("${{steps.{body}}}");
    let mut first = None;
    for (at, _) in body.rmatch_indices(".result") {
        let after = &body[at + ".result".len()..];
        if !(after.is_empty() || after.starts_with('.')) {
            continue;
        }
        let step = &body[..at];
        first = Some(step);
        if !is_step(step) {
            continue;
        }
        let path: Vec<String> = if after.is_empty() {
            Vec::new()
        } else {
            after[1..].split('.').map(str::to_owned).collect()
        };
        if path.iter().any(String::is_empty) {
            return Err(format!("'{whole}' has an empty field name"));
        }
        return Ok(Reference {
            step: step.to_owned(),
            path,
        });
    }
    match first {
        Some(step) => Err(format!("'{whole}' refers to '{step}', which is not a step")),
        None => Err(format!(
            "'{whole}' is not a reference: write ${{steps.ID.result}} or ${{steps.ID.result.field}}"
        )),
    }
}

fn clip(text: &str) -> &str {
    match text.char_indices().nth(40) {
        Some((at, _)) => &text[..at],
        None => text,
    }
}

/// Every reference in the strings of `value`.
fn references(value: &Value, is_step: &dyn Fn(&str) -> bool) -> Result<Vec<Reference>, String> {
    let mut out = Vec::new();
    let mut stack = vec![value];
    while let Some(value) = stack.pop() {
        match value {
            Value::String(text) if text.contains(OPEN) => {
                for piece in pieces(text, is_step)? {
                    if let Piece::Ref(reference) = piece {
                        out.push(reference);
                    }
                }
            }
            Value::Array(items) => stack.extend(items),
            Value::Object(fields) => stack.extend(fields.values()),
            _ => {}
        }
    }
    Ok(out)
}

/// Whether `payload` (JSON text) may refer to other steps' results.
pub fn has_references(payload: &str) -> bool {
    payload.contains(OPEN)
}

/// A workflow that passed [`check`]: for each step (in the order given), the indexes of the
/// steps it needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checked {
    pub needs: Vec<Vec<usize>>,
}

/// Checks a workflow before anything of it is stored: its name and step ids, that every
/// need is a step and there is no cycle, and that a step's payload only takes the results
/// of steps it needs (directly or through others), which are sure to have succeeded when
/// it runs.
pub fn check(spec: &WorkflowSpec) -> Result<Checked, ValidationError> {
    if !valid_name(&spec.name) {
        return Err(name_error("name", &spec.name));
    }
    if spec.steps.is_empty() {
        return Err(ValidationError::new(
            INVALID,
            "steps: a workflow needs a step",
        ));
    }
    if spec.steps.len() > MAX_WORKFLOW_STEPS {
        return Err(ValidationError::new(
            INVALID,
            format!(
                "steps: {} steps; a workflow has at most {MAX_WORKFLOW_STEPS}",
                spec.steps.len()
            ),
        ));
    }
    let mut index: HashMap<&str, usize> = HashMap::new();
    for (i, step) in spec.steps.iter().enumerate() {
        if !valid_name(&step.id) {
            return Err(name_error(&format!("steps[{i}].id"), &step.id));
        }
        if index.insert(&step.id, i).is_some() {
            return Err(ValidationError::new(
                INVALID,
                format!("steps[{i}]: the step id '{}' is used twice", step.id),
            ));
        }
    }
    let mut needs = Vec::with_capacity(spec.steps.len());
    for step in &spec.steps {
        let mut mine = Vec::with_capacity(step.needs.len());
        for need in &step.needs {
            let Some(&at) = index.get(need.as_str()) else {
                return Err(ValidationError::new(
                    INVALID,
                    format!("step '{}' needs '{need}', which is not a step", step.id),
                ));
            };
            if !mine.contains(&at) {
                mine.push(at);
            }
        }
        if mine.len() > MAX_DEPENDENCIES {
            return Err(ValidationError::new(
                INVALID,
                format!(
                    "step '{}' needs {} steps; at most {MAX_DEPENDENCIES}",
                    step.id,
                    mine.len()
                ),
            ));
        }
        needs.push(mine);
    }
    if let Some(cycle) = cycle(&needs) {
        let names: Vec<&str> = cycle.iter().map(|&i| spec.steps[i].id.as_str()).collect();
        return Err(ValidationError::new(
            INVALID,
            format!("the steps form a cycle: {}", names.join(" → ")),
        ));
    }
    let is_step = |id: &str| index.contains_key(id);
    for (i, step) in spec.steps.iter().enumerate() {
        let found = match &step.payload {
            Some(payload) => references(payload, &is_step).map_err(|message| {
                ValidationError::new(INVALID, format!("step '{}': {message}", step.id))
            })?,
            None => Vec::new(),
        };
        if !found.is_empty() {
            let before = ancestors(&needs, i);
            for reference in found {
                let at = index[reference.step.as_str()];
                if !before.contains(&at) {
                    return Err(ValidationError::new(
                        INVALID,
                        format!(
                            "step '{}' takes {reference}, but does not need '{}' (directly or through other steps), so it could run first",
                            step.id, reference.step
                        ),
                    ));
                }
            }
        }
    }
    Ok(Checked { needs })
}

/// The refusal of `name` in `field`, which is not a name.
pub fn name_error(field: &str, name: &str) -> ValidationError {
    ValidationError::new(
        "invalid_name",
        format!(
            "{field}: '{name}' is not a name: 1 to 128 letters, digits, '.', '_', ':' or '-', starting with a letter or digit"
        ),
    )
}

/// A cycle in the graph (each node's needs), as the nodes on it with the first repeated at
/// the end, if there is one.
fn cycle(needs: &[Vec<usize>]) -> Option<Vec<usize>> {
    // Kahn's algorithm: what is never freed lies on or behind a cycle.
    let mut waiting: Vec<usize> = needs.iter().map(Vec::len).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); needs.len()];
    for (child, parents) in needs.iter().enumerate() {
        for &parent in parents {
            children[parent].push(child);
        }
    }
    let mut ready: Vec<usize> = (0..needs.len()).filter(|&i| waiting[i] == 0).collect();
    let mut freed = 0;
    while let Some(node) = ready.pop() {
        freed += 1;
        for &child in &children[node] {
            waiting[child] -= 1;
            if waiting[child] == 0 {
                ready.push(child);
            }
        }
    }
    if freed == needs.len() {
        return None;
    }
    // Walk needs among the unfreed nodes until one repeats: every unfreed node has an
    // unfreed need, so the walk cannot stop.
    let start = (0..needs.len()).find(|&i| waiting[i] > 0)?;
    let mut seen: HashMap<usize, usize> = HashMap::new();
    let mut path = Vec::new();
    let mut node = start;
    loop {
        if let Some(&at) = seen.get(&node) {
            let mut on_cycle: Vec<usize> = path[at..].to_vec();
            // Walked child → parent; show it in running order.
            on_cycle.reverse();
            on_cycle.push(on_cycle[0]);
            return Some(on_cycle);
        }
        seen.insert(node, path.len());
        path.push(node);
        node = *needs[node].iter().find(|&&n| waiting[n] > 0)?;
    }
}

/// Every step `i` needs, directly or through others.
fn ancestors(needs: &[Vec<usize>], i: usize) -> HashSet<usize> {
    let mut seen = HashSet::new();
    let mut stack: Vec<usize> = needs[i].clone();
    while let Some(node) = stack.pop() {
        if seen.insert(node) {
            stack.extend(&needs[node]);
        }
    }
    seen
}

/// The steps whose results `payload` takes, given the workflow's step ids.
pub fn used_steps(payload: &Value, steps: &HashSet<String>) -> Result<Vec<String>, String> {
    let mut out: Vec<String> = references(payload, &|id| steps.contains(id))?
        .into_iter()
        .map(|reference| reference.step)
        .collect();
    out.sort();
    out.dedup();
    Ok(out)
}

/// `payload` with every reference replaced by the value it names in `results` (each step's
/// result by its id): a string that is one reference becomes that JSON value, and a
/// reference inside a longer string is put in as text (a string as it is, anything else as
/// JSON). Fails, naming the reference, when a result lacks the field.
pub fn substitute(payload: &Value, results: &HashMap<String, Value>) -> Result<Value, String> {
    let is_step = |id: &str| results.contains_key(id);
    Ok(match payload {
        Value::String(text) if text.contains(OPEN) => {
            let pieces = pieces(text, &is_step)?;
            if let [Piece::Ref(reference)] = pieces.as_slice() {
                return lookup(reference, results).cloned();
            }
            let mut out = String::with_capacity(text.len());
            for piece in &pieces {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Ref(reference) => match lookup(reference, results)? {
                        Value::String(text) => out.push_str(text),
                        other => out.push_str(&other.to_string()),
                    },
                }
            }
            Value::String(out)
        }
        Value::Array(items) => Value::Array(
            items
                .iter()
                .map(|item| substitute(item, results))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(key, value)| Ok((key.clone(), substitute(value, results)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// The value a reference names.
fn lookup<'a>(
    reference: &Reference,
    results: &'a HashMap<String, Value>,
) -> Result<&'a Value, String> {
    let mut value = results
        .get(&reference.step)
        .ok_or_else(|| format!("{reference}: step '{}' has no result", reference.step))?;
    for (depth, key) in reference.path.iter().enumerate() {
        let next = match value {
            Value::Object(fields) => fields.get(key),
            Value::Array(items) => key.parse::<usize>().ok().and_then(|i| items.get(i)),
            _ => None,
        };
        value = next.ok_or_else(|| {
            let within = if depth == 0 {
                format!("the result of step '{}'", reference.step)
            } else {
                format!("'{}'", reference.path[..depth].join("."))
            };
            format!(
                "{reference}: {within} has no field '{key}' (it is {})",
                shape(value)
            )
        })?;
    }
    Ok(value)
}

/// A short description of a JSON value, for an error.
fn shape(value: &Value) -> String {
    match value {
        Value::Object(fields) if fields.is_empty() => "an empty object".to_owned(),
        Value::Object(fields) => {
            let keys: Vec<&str> = fields.keys().take(8).map(String::as_str).collect();
            let more = if fields.len() > keys.len() {
                ", …"
            } else {
                ""
            };
            format!("an object with {}{more}", keys.join(", "))
        }
        Value::Array(items) => format!("an array of {}", items.len()),
        Value::String(_) => "a string".to_owned(),
        Value::Number(_) => "a number".to_owned(),
        Value::Bool(_) => "a boolean".to_owned(),
        Value::Null => "null".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use taskplane_api::WorkflowStep;

    fn step(id: &str, needs: &[&str], payload: Value) -> WorkflowStep {
        WorkflowStep {
            id: id.to_owned(),
            kind: "echo".to_owned(),
            payload: Some(payload),
            needs: needs.iter().map(|n| (*n).to_owned()).collect(),
            ..WorkflowStep::default()
        }
    }

    fn spec(steps: Vec<WorkflowStep>) -> WorkflowSpec {
        WorkflowSpec {
            name: "deploy".to_owned(),
            steps,
        }
    }

    fn refused(steps: Vec<WorkflowStep>) -> ValidationError {
        match check(&spec(steps)) {
            Ok(checked) => panic!("accepted: {checked:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn a_diamond_passes_with_its_needs() {
        let checked = check(&spec(vec![
            step("a", &[], json!({})),
            step("b", &["a"], json!({})),
            step("c", &["a"], json!({})),
            step(
                "d",
                &["b", "c"],
                json!({"from_b": "${steps.b.result.x}", "from_a": "a said ${steps.a.result}"}),
            ),
        ]))
        .map_err(|e| e.message);
        assert_eq!(
            checked.map(|c| c.needs),
            Ok(vec![vec![], vec![0], vec![0], vec![1, 2]])
        );
    }

    #[test]
    fn bad_graphs_are_refused_naming_the_problem() {
        let cycle = refused(vec![
            step("a", &["c"], json!({})),
            step("b", &["a"], json!({})),
            step("c", &["b"], json!({})),
            step("d", &[], json!({})),
        ]);
        assert_eq!(cycle.code, INVALID);
        assert!(cycle.message.contains("cycle"), "{}", cycle.message);
        for id in ["a", "b", "c"] {
            assert!(cycle.message.contains(id), "{}", cycle.message);
        }
        assert!(!cycle.message.contains('d'), "{}", cycle.message);

        let own = refused(vec![step("a", &["a"], json!({}))]);
        assert_eq!(own.message, "the steps form a cycle: a → a");

        let unknown = refused(vec![step("a", &["nope"], json!({}))]);
        assert_eq!(
            unknown.message,
            "step 'a' needs 'nope', which is not a step"
        );

        let twice = refused(vec![step("a", &[], json!({})), step("a", &[], json!({}))]);
        assert!(
            twice.message.contains("'a' is used twice"),
            "{}",
            twice.message
        );

        let name = refused(vec![step("-a", &[], json!({}))]);
        assert_eq!(name.code, "invalid_name");
        assert!(name.message.starts_with("steps[0].id"), "{}", name.message);

        assert!(refused(vec![]).message.contains("needs a step"));
        let many: Vec<WorkflowStep> = (0..=MAX_WORKFLOW_STEPS)
            .map(|i| step(&format!("s{i}"), &[], json!({})))
            .collect();
        assert!(refused(many).message.contains("at most 1000"));
    }

    #[test]
    fn a_reference_must_be_to_an_ancestor() {
        // c takes b's result, but b and c are siblings: c could run first.
        let sibling = refused(vec![
            step("a", &[], json!({})),
            step("b", &["a"], json!({})),
            step("c", &["a"], json!({"x": "${steps.b.result}"})),
        ]);
        assert!(
            sibling.message.contains("does not need 'b'"),
            "{}",
            sibling.message
        );
        // Through another step is fine.
        let through = check(&spec(vec![
            step("a", &[], json!({})),
            step("b", &["a"], json!({})),
            step("c", &["b"], json!(["${steps.a.result}"])),
        ]));
        assert!(through.is_ok(), "{through:?}");
        let unknown = refused(vec![step("a", &[], json!({"x": "${steps.zz.result}"}))]);
        assert!(
            unknown.message.contains("'zz', which is not a step"),
            "{}",
            unknown.message
        );
        let malformed = refused(vec![step("a", &[], json!({"x": "${steps.a}"}))]);
        assert!(malformed.message.contains("is not a reference"));
        let open = refused(vec![step("a", &[], json!({"x": "${steps.a.result"}))]);
        assert!(open.message.contains("not closed"), "{}", open.message);
    }

    #[test]
    fn dotted_step_ids_resolve_to_the_step_that_exists() {
        let results = HashMap::from([
            ("web.eu".to_owned(), json!({"host": "h1"})),
            ("web".to_owned(), json!({"eu": {"result": "wrong"}})),
        ]);
        let out = substitute(&json!("${steps.web.eu.result.host}"), &results);
        assert_eq!(out, Ok(json!("h1")));
    }

    #[test]
    fn substitution_keeps_types_and_interpolates_text() {
        let results = HashMap::from([
            (
                "b".to_owned(),
                json!({"n": 3, "tags": ["x", "y"], "host": "web1"}),
            ),
            ("a".to_owned(), json!("plain")),
        ]);
        let payload = json!({
            "n": "${steps.b.result.n}",
            "all": "${steps.b.result}",
            "second": "${steps.b.result.tags.1}",
            "text": "host=${steps.b.result.host} n=${steps.b.result.n} a=${steps.a.result}",
            "untouched": "${HOME} and $steps",
            "nested": [{"deep": "${steps.a.result}"}],
            "number": 7,
        });
        assert_eq!(
            substitute(&payload, &results),
            Ok(json!({
                "n": 3,
                "all": {"n": 3, "tags": ["x", "y"], "host": "web1"},
                "second": "y",
                "text": "host=web1 n=3 a=plain",
                "untouched": "${HOME} and $steps",
                "nested": [{"deep": "plain"}],
                "number": 7,
            }))
        );
    }

    #[test]
    fn a_missing_field_is_a_clear_error() {
        let results = HashMap::from([("b".to_owned(), json!({"n": 3}))]);
        let error = substitute(&json!({"x": "${steps.b.result.host}"}), &results);
        assert_eq!(
            error,
            Err("${steps.b.result.host}: the result of step 'b' has no field 'host' (it is an object with n)".to_owned())
        );
        let deeper = substitute(&json!("${steps.b.result.n.x}"), &results);
        assert_eq!(
            deeper,
            Err("${steps.b.result.n.x}: 'n' has no field 'x' (it is a number)".to_owned())
        );
    }
}
