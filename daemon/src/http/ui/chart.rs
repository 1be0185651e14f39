//! The dashboard's pictures, drawn as inline SVG on the server: a queue's depth sparkline,
//! the last hour's finished tasks per minute, and a workflow's DAG. Sizes are fixed by the
//! `viewBox`, so nothing moves when the numbers change.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;

use maud::{Markup, html};
use taskplane_api::WorkflowStepState;

/// A line of `points` (oldest first) in a 120 × 24 box; the last point is marked.
pub fn sparkline(points: &[u64], label: &str) -> Markup {
    const W: f64 = 120.0;
    const H: f64 = 24.0;
    let max = points.iter().copied().max().unwrap_or(0).max(1) as f64;
    let step = if points.len() > 1 {
        W / (points.len() - 1) as f64
    } else {
        0.0
    };
    let mut path = String::new();
    for (i, &value) in points.iter().enumerate() {
        let x = i as f64 * step;
        let y = H - 2.0 - (value as f64 / max) * (H - 4.0);
        let _ = write!(path, "{}{x:.1},{y:.1} ", if i == 0 { "M" } else { "L" });
    }
    let last = points.last().map(|&value| {
        let x = (points.len() - 1) as f64 * step;
        (x, H - 2.0 - (value as f64 / max) * (H - 4.0))
    });
    html! {
        svg.spark viewBox="0 0 120 24" width="120" height="24" role="img" aria-label=(label) {
            title { (label) }
            @if points.len() > 1 {
                path d=(path.trim_end()) {}
                @if let Some((x, y)) = last { circle cx=(format!("{x:.1}")) cy=(format!("{y:.1}")) r="2" {} }
            } @else {
                // Too soon for a trend: a quiet baseline until the second sample.
                line.none x1="0" y1="22.5" x2="120" y2="22.5" {}
            }
        }
    }
}

/// One minute of the throughput chart.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Minute {
    /// The minute's start (ms).
    pub at: i64,
    pub succeeded: u64,
    pub failed: u64,
}

/// Stacked bars of succeeded and failed tasks per minute, oldest on the left.
pub fn minutes(minutes: &[Minute]) -> Markup {
    const W: f64 = 600.0;
    const H: f64 = 120.0;
    let max = minutes
        .iter()
        .map(|m| m.succeeded + m.failed)
        .max()
        .unwrap_or(0)
        .max(1);
    let slot = W / minutes.len().max(1) as f64;
    let bar = (slot - 1.0).max(1.0);
    let scale = |n: u64| n as f64 / max as f64 * (H - 4.0);
    html! {
        svg.minutes viewBox="0 0 600 120" preserveAspectRatio="none" role="img"
            aria-label="Tasks finished per minute over the last hour" {
            line.axis x1="0" y1="119.5" x2="600" y2="119.5" {}
            @for (i, m) in minutes.iter().enumerate() {
                @let x = i as f64 * slot;
                @let ok = scale(m.succeeded);
                @let bad = scale(m.failed);
                g {
                    title { (minute_label(m.at)) ": " (m.succeeded) " succeeded, " (m.failed) " failed" }
                    rect.hit x=(format!("{x:.1}")) y="0" width=(format!("{slot:.1}")) height="120" {}
                    @if m.succeeded > 0 {
                        rect.ok x=(format!("{x:.1}")) y=(format!("{:.1}", H - ok)) width=(format!("{bar:.1}")) height=(format!("{ok:.1}")) {}
                    }
                    @if m.failed > 0 {
                        rect.bad x=(format!("{x:.1}")) y=(format!("{:.1}", H - ok - bad)) width=(format!("{bar:.1}")) height=(format!("{bad:.1}")) {}
                    }
                }
            }
        }
    }
}

/// `HH:MM` (UTC) of a minute's start.
fn minute_label(at: i64) -> String {
    chrono::DateTime::from_timestamp_millis(at)
        .map(|t| t.format("%H:%M UTC").to_string())
        .unwrap_or_default()
}

/// Where each step of a DAG goes: its column (the longest chain of needs before it) and its
/// row within the column (ordered by the rows of what it needs, to keep edges short).
pub fn layout(steps: &[WorkflowStepState]) -> Vec<(usize, usize)> {
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    // Columns by longest path; steps arrive in an order where needs may come later, so
    // relax until nothing changes (a workflow is acyclic: at most n rounds).
    let mut column = vec![0usize; steps.len()];
    for _ in 0..steps.len() {
        let mut changed = false;
        for (i, step) in steps.iter().enumerate() {
            let want = step
                .needs
                .iter()
                .filter_map(|n| index.get(n.as_str()))
                .map(|&p| column[p] + 1)
                .max()
                .unwrap_or(0);
            if want > column[i] {
                column[i] = want;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut by_column: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, &c) in column.iter().enumerate() {
        by_column.entry(c).or_default().push(i);
    }
    let mut row = vec![0usize; steps.len()];
    for members in by_column.values_mut() {
        // The mean row of what a step needs (its barycenter); roots keep their order.
        let key = |i: usize| -> f64 {
            let rows: Vec<f64> = steps[i]
                .needs
                .iter()
                .filter_map(|n| index.get(n.as_str()))
                .map(|&p| row[p] as f64)
                .collect();
            if rows.is_empty() {
                i as f64
            } else {
                rows.iter().sum::<f64>() / rows.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = members.iter().map(|&i| (key(i), i)).collect();
        keyed.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        for (r, (_, i)) in keyed.into_iter().enumerate() {
            row[i] = r;
        }
    }
    column.into_iter().zip(row).collect()
}

/// A workflow's steps as boxes in columns, each coloured by its status and linking to its
/// task, with an arrow from every step to the steps that need it.
pub fn dag(steps: &[WorkflowStepState]) -> Markup {
    const BOX_W: usize = 168;
    const BOX_H: usize = 46;
    const GAP_X: usize = 56;
    const GAP_Y: usize = 18;
    let places = layout(steps);
    let columns = places.iter().map(|p| p.0 + 1).max().unwrap_or(1);
    let rows = places.iter().map(|p| p.1 + 1).max().unwrap_or(1);
    let width = columns * (BOX_W + GAP_X) - GAP_X + 8;
    let height = rows * (BOX_H + GAP_Y) - GAP_Y + 8;
    let origin = |i: usize| {
        let (c, r) = places[i];
        (4 + c * (BOX_W + GAP_X), 4 + r * (BOX_H + GAP_Y))
    };
    let index: HashMap<&str, usize> = steps
        .iter()
        .enumerate()
        .map(|(i, s)| (s.id.as_str(), i))
        .collect();
    let mut edges = Vec::new();
    for (i, step) in steps.iter().enumerate() {
        for need in &step.needs {
            if let Some(&p) = index.get(need.as_str()) {
                let (px, py) = origin(p);
                let (cx, cy) = origin(i);
                let (x1, y1) = (px + BOX_W, py + BOX_H / 2);
                let (x2, y2) = (cx, cy + BOX_H / 2);
                let mid = (x1 + x2) / 2;
                edges.push(format!("M{x1},{y1} C{mid},{y1} {mid},{y2} {},{y2}", x2 - 6));
            }
        }
    }
    html! {
        svg.dag viewBox=(format!("0 0 {width} {height}")) width=(width) height=(height)
            role="img" aria-label="The workflow's steps and what each needs" {
            defs {
                marker #arrow viewBox="0 0 10 10" refX="1" refY="5" markerWidth="6" markerHeight="6" orient="auto-start-reverse" {
                    path d="M 0 0 L 10 5 L 0 10 z" {}
                }
            }
            g.edges { @for edge in &edges { path d=(edge) marker-end="url(#arrow)" {} } }
            @for (i, step) in steps.iter().enumerate() {
                @let (x, y) = origin(i);
                a href={ "/ui/tasks/" (step.task_id) } class={ "node st-" (step.status.as_str()) } data-step=(step.id) {
                    title { (step.id) ": " (step.status.as_str()) }
                    rect x=(x) y=(y) width=(BOX_W) height=(BOX_H) rx="6" {}
                    text.name x=(x + 10) y=(y + 19) { (super::view::truncate(&step.id, 20)) }
                    text.state x=(x + 10) y=(y + 36) { (step.status.as_str()) " · " (step.kind) }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use taskplane_api::TaskStatus;

    fn step(id: &str, needs: &[&str]) -> WorkflowStepState {
        WorkflowStepState {
            id: id.to_owned(),
            task_id: uuid::Uuid::nil(),
            kind: "noop".to_owned(),
            status: TaskStatus::Queued,
            needs: needs.iter().map(|n| (*n).to_owned()).collect(),
            attempts: 0,
            max_attempts: 1,
            started_at: None,
            finished_at: None,
            last_error: None,
        }
    }

    #[test]
    fn steps_go_one_column_after_the_longest_chain_they_need() {
        // d needs b and c; c needs a; the list names d first.
        let steps = [
            step("d", &["b", "c"]),
            step("a", &[]),
            step("b", &[]),
            step("c", &["a"]),
        ];
        let places = layout(&steps);
        assert_eq!(places[1].0, 0, "a");
        assert_eq!(places[2].0, 0, "b");
        assert_eq!(places[3].0, 1, "c after a");
        assert_eq!(places[0].0, 2, "d after c");
        let mut first_column: Vec<usize> = [places[1].1, places[2].1].to_vec();
        first_column.sort_unstable();
        assert_eq!(first_column, [0, 1], "rows within a column are distinct");
    }

    #[test]
    fn a_dag_links_every_step_to_its_task_and_draws_an_edge_per_need() {
        let steps = [
            step("build", &[]),
            step("test", &["build"]),
            step("ship", &["test", "build"]),
        ];
        let svg = dag(&steps).into_string();
        assert_eq!(svg.matches("<a href=\"/ui/tasks/").count(), 3);
        assert_eq!(svg.matches("marker-end").count(), 3, "an arrow per need");
        assert!(svg.contains("st-queued"));
    }

    #[test]
    fn bars_scale_to_the_busiest_minute() {
        let svg = minutes(&[
            Minute {
                at: 0,
                succeeded: 10,
                failed: 0,
            },
            Minute {
                at: 60_000,
                succeeded: 5,
                failed: 5,
            },
        ])
        .into_string();
        assert_eq!(svg.matches("class=\"bad\"").count(), 1);
        assert_eq!(svg.matches("class=\"ok\"").count(), 2);
    }
}
