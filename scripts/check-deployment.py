#!/usr/bin/env python3
"""Static checks of the deployment artifacts (no Docker engine or cluster runs here).

compose/: the Compose file parses, every service has a health check, dependencies wait for
health, workers can be scaled, the observability profile is complete, the redis profile runs
an API and workers on Redis (with its append-only file) and nothing of RabbitMQ. k8s/: every overlay
renders with `kubectl kustomize` and validates against the Kubernetes schemas
(kubernetes-validate --strict); every container has probes, resources and a non-root,
read-only security context; no real secret is committed; the HPA and the KEDA alternative
exclude each other. Dockerfile: the build runs the README's `cargo build --release`, the
runtime is non-root with a health check.

Usage: check-deployment.py REPO  (kubectl and kubernetes-validate on the PATH)
"""
import json
import os
import shutil
import subprocess
import sys

import yaml

failures = []
passed = 0


def check(condition, message):
    global passed
    if condition:
        passed += 1
    else:
        failures.append(message)


def check_compose(repo):
    path = os.path.join(repo, "compose", "docker-compose.yml")
    with open(path) as f:
        compose = yaml.safe_load(f)
    services = compose.get("services", {})
    check(set(services) >= {"postgres", "rabbitmq", "api", "worker"}, "compose: core services missing")
    for name, service in services.items():
        test = (service.get("healthcheck") or {}).get("test")
        check(bool(test), f"compose: service {name} has no healthcheck")
        for dep, spec in (service.get("depends_on") or {}).items():
            check(isinstance(spec, dict) and spec.get("condition") == "service_healthy",
                  f"compose: {name} depends on {dep} without condition: service_healthy")
    worker = services.get("worker", {})
    check("container_name" not in worker and "ports" not in worker,
          "compose: worker must not fix a container name or host port (--scale worker=N)")
    check(worker.get("command", [])[:2] == ["--role", "worker"], "compose: worker role")
    api = services.get("api", {})
    check(any("7070" in str(p) for p in api.get("ports", [])), "compose: api must publish 7070")
    check(api.get("command", [])[:2] == ["--role", "api"], "compose: api role")
    # taskd refuses a non-loopback listen without auth: the API must get a JWT secret.
    check("TASKD_JWT_SECRET" in api.get("environment", {}) and "--insecure-no-auth" not in str(api),
          "compose: the API has auth on (TASKD_JWT_SECRET)")
    check("15672" in str(services.get("rabbitmq", {}).get("ports", [])),
          "compose: the RabbitMQ management UI is published")
    for name in ("prometheus", "grafana", "loki", "alloy"):
        check("observability" in services.get(name, {}).get("profiles", []),
              f"compose: {name} belongs to the observability profile")
    # Logs: taskd logs JSON, Alloy reads the containers through a read-only Docker socket and
    # ships to Loki, Grafana has Loki as a data source and a logs panel filtered by task_id.
    for name in ("api", "worker", "api-redis", "worker-redis"):
        env = services.get(name, {}).get("environment", {})
        check(env.get("TASKD_LOG_FORMAT") == "json", f"compose: {name} logs JSON lines")
    alloy = services.get("alloy", {})
    alloy_mounts = [str(v) for v in alloy.get("volumes", [])]
    check("/var/run/docker.sock:/var/run/docker.sock:ro" in alloy_mounts,
          "compose: Alloy reads the Docker socket read-only")
    check(any(m.startswith("./alloy/config.alloy:") for m in alloy_mounts), "compose: Alloy gets its config")
    check("loki" in (alloy.get("depends_on") or {}), "compose: Alloy waits for Loki")
    check("loki" in (services.get("grafana", {}).get("depends_on") or {}), "compose: Grafana waits for Loki")
    with open(os.path.join(repo, "compose", "alloy", "config.alloy")) as f:
        alloy_config = f.read()
    code = "\n".join(l.split("//")[0] for l in alloy_config.splitlines())
    check(code.count("{") == code.count("}") and code.count("[") == code.count("]"),
          "compose: config.alloy has balanced blocks")
    for block in ('discovery.docker "containers"', 'loki.source.docker "taskd"', 'loki.process "taskd"',
                  'loki.write "local"', "http://loki:3100/loki/api/v1/push", '"span.task_id"'):
        check(block in alloy_config, f"compose: config.alloy has {block}")
    with open(os.path.join(repo, "compose", "grafana", "provisioning", "datasources", "loki.yml")) as f:
        sources = yaml.safe_load(f).get("datasources", [])
    check(any(d.get("type") == "loki" and d.get("url") == "http://loki:3100" for d in sources),
          "compose: Grafana has Loki as a data source")
    for env_name in ("api", "worker"):
        env = services.get(env_name, {}).get("environment", {})
        check("TASKD_DATABASE_URL" in env and "TASKD_BROKER_URL" in env,
              f"compose: {env_name} is configured through env vars")
    # The redis profile: Redis instead of RabbitMQ.
    redis = services.get("redis", {})
    check("redis" in redis.get("profiles", []), "compose: redis belongs to the redis profile")
    check("--appendonly" in redis.get("command", []) and "yes" in redis.get("command", []),
          "compose: Redis keeps its append-only file")
    for name, role in (("api-redis", "api"), ("worker-redis", "worker")):
        service = services.get(name, {})
        check("redis" in service.get("profiles", []), f"compose: {name} belongs to the redis profile")
        check(service.get("command", [])[:2] == ["--role", role], f"compose: {name} role")
        broker = service.get("environment", {}).get("TASKD_BROKER_URL", "")
        check(broker.startswith("redis://"), f"compose: {name} uses Redis, not {broker}")
        deps = service.get("depends_on") or {}
        check("redis" in deps and "rabbitmq" not in deps, f"compose: {name} waits for Redis only")
    check("TASKD_JWT_SECRET" in services.get("api-redis", {}).get("environment", {}),
          "compose: the Redis API has auth on (TASKD_JWT_SECRET)")
    with open(os.path.join(repo, "compose", "grafana", "dashboards", "taskplane.json")) as f:
        dashboard = json.load(f)
    check(len(dashboard.get("panels", [])) > 0, "compose: the Grafana dashboard has panels")
    logs = [p for p in dashboard.get("panels", []) if p.get("type") == "logs"]
    check(len(logs) == 1 and logs[0]["datasource"]["type"] == "loki"
          and "task_id" in logs[0]["targets"][0]["expr"],
          "compose: the dashboard has a Loki logs panel filtered by task_id")
    variables = {v["name"] for v in dashboard.get("templating", {}).get("list", [])}
    check("task_id" in variables, "compose: the dashboard asks for a task_id")
    with open(os.path.join(repo, "compose", "prometheus", "prometheus.yml")) as f:
        prometheus = yaml.safe_load(f)
    jobs = {c.get("job_name") for c in prometheus.get("scrape_configs", [])}
    check(jobs == {"taskd-api", "taskd-worker", "taskd-api-redis", "taskd-worker-redis"},
          f"compose: Prometheus scrapes the APIs and workers of both profiles, not {jobs}")
    check(prometheus.get("rule_files") == ["alerts.yml"], "compose: Prometheus loads the alert rules")
    mounts = [str(v) for v in services.get("prometheus", {}).get("volumes", [])]
    check(any("alerts.yml:/etc/prometheus/alerts.yml" in m for m in mounts),
          "compose: the alert rules are mounted beside prometheus.yml")
    docker = shutil.which("docker")
    if docker and subprocess.run([docker, "compose", "version"], capture_output=True).returncode == 0:
        result = subprocess.run([docker, "compose", "-f", path, "config", "-q"], capture_output=True, text=True)
        check(result.returncode == 0, f"compose: docker compose config: {result.stderr.strip()}")
    else:
        print("note: this docker client has no compose plugin; parsed with PyYAML only")


def pod_specs(doc):
    kind = doc.get("kind")
    spec = doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        yield spec["template"]["spec"]
    elif kind == "CronJob":
        yield spec["jobTemplate"]["spec"]["template"]["spec"]


def check_overlay(repo, overlay):
    path = os.path.join(repo, "k8s", "overlays", overlay)
    rendered = subprocess.run(["kubectl", "kustomize", path], capture_output=True, text=True)
    check(rendered.returncode == 0, f"k8s/{overlay}: kubectl kustomize: {rendered.stderr.strip()}")
    if rendered.returncode != 0:
        return []
    docs = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    out = os.path.join(os.environ.get("TMPDIR", "/tmp"), f"taskplane-{overlay}-{os.getpid()}.yaml")
    with open(out, "w") as f:
        f.write(rendered.stdout)
    validated = subprocess.run(["kubernetes-validate", "--strict", "--quiet", out], capture_output=True, text=True)
    os.unlink(out)
    errors = [l for l in (validated.stdout + validated.stderr).splitlines() if not l.startswith("WARN")]
    check(validated.returncode == 0 and not errors, f"k8s/{overlay}: schema validation: {errors}")
    for doc in docs:
        name = f"k8s/{overlay}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "Secret":
            values = list((doc.get("stringData") or {}).values()) + list((doc.get("data") or {}).values())
            check(all("change-me" in v for v in values), f"{name}: only example values may be committed")
        for pod in pod_specs(doc):
            sc = pod.get("securityContext", {})
            check(sc.get("runAsNonRoot") is True and sc.get("runAsUser", 0) != 0, f"{name}: pods run as non-root")
            containers = pod.get("containers", []) + pod.get("initContainers", [])
            for c in containers:
                cname = f"{name} container {c['name']}"
                res = c.get("resources", {})
                for part in ("requests", "limits"):
                    check(set(res.get(part, {})) >= {"cpu", "memory"}, f"{cname}: resources.{part} cpu and memory")
                csc = c.get("securityContext", {})
                check(csc.get("allowPrivilegeEscalation") is False, f"{cname}: allowPrivilegeEscalation false")
                check(csc.get("readOnlyRootFilesystem") is True, f"{cname}: readOnlyRootFilesystem")
                check("ALL" in csc.get("capabilities", {}).get("drop", []), f"{cname}: drops all capabilities")
            for c in pod.get("containers", []):
                cname = f"{name} container {c['name']}"
                if "api" in c.get("args", []):
                    env = {e["name"] for e in c.get("env", [])}
                    check("TASKD_JWT_SECRET" in env and "--insecure-no-auth" not in c.get("args", []),
                          f"{cname}: the API has auth on (TASKD_JWT_SECRET)")
                check((c.get("livenessProbe") or {}).get("httpGet", {}).get("path") == "/health",
                      f"{cname}: liveness probe on /health")
                check((c.get("readinessProbe") or {}).get("httpGet", {}).get("path") == "/ready",
                      f"{cname}: readiness probe on /ready")
    return docs


def kinds(docs):
    return {d["kind"] for d in docs}


def check_kubernetes(repo):
    dev = check_overlay(repo, "dev")
    prod = check_overlay(repo, "prod")
    keda = check_overlay(repo, "prod-keda")
    on_redis = check_overlay(repo, "redis")
    brokers = [d.get("stringData", {}).get("BROKER_URL", "") for d in on_redis if d["kind"] == "Secret"]
    check(len(brokers) == 1 and brokers[0].startswith("redis://"),
          f"k8s/redis: the broker URL names Redis, not {brokers}")
    check("HorizontalPodAutoscaler" in kinds(on_redis), "k8s/redis: workers scale on CPU")
    for name, docs in (("dev", dev), ("prod", prod)):
        check({"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap",
               "Secret", "Namespace"} <= kinds(docs), f"k8s/{name}: the base's objects")
        check("ScaledObject" not in kinds(docs), f"k8s/{name}: no KEDA object without the component")
    check("HorizontalPodAutoscaler" not in kinds(keda), "k8s/prod-keda: KEDA replaces the HPA")
    scaled = [d for d in keda if d["kind"] == "ScaledObject"]
    check(len(scaled) == 1 and scaled[0]["spec"]["scaleTargetRef"]["name"] == "taskplane-worker"
          and scaled[0]["spec"]["triggers"][0]["type"] == "rabbitmq",
          "k8s/prod-keda: a ScaledObject on RabbitMQ for the workers")
    namespaces = {d["metadata"].get("namespace") for d in dev if d["kind"] != "Namespace"}
    check(namespaces == {"taskplane-dev"}, f"k8s/dev: everything in taskplane-dev, not {namespaces}")
    images = {c["image"] for d in prod for p in pod_specs(d) for c in p["containers"]}
    check(images == {"registry.example.com/taskplane:0.1.0"}, f"k8s/prod: pinned image, not {images}")


def check_dockerfile(repo):
    with open(os.path.join(repo, "compose", "Dockerfile")) as f:
        dockerfile = f.read()
    with open(os.path.join(repo, "README.md")) as f:
        readme = f.read()
    check("cargo build --release" in dockerfile, "Dockerfile: the build stage runs cargo build --release")
    check("cargo build --release" in readme, "README: documents cargo build --release")
    stages = dockerfile.split("\nFROM ")
    runtime = stages[-1]
    check(len(stages) >= 3, "Dockerfile: multi-stage")
    user = [l.split()[1] for l in runtime.splitlines() if l.startswith("USER ")]
    check(user and not user[-1].startswith(("0", "root")), "Dockerfile: runs as a non-root user")
    check("HEALTHCHECK" in runtime, "Dockerfile: has a health check")
    check("taskd" in runtime and "taskctl" in runtime, "Dockerfile: ships both binaries")


def main():
    repo = sys.argv[1] if len(sys.argv) > 1 else "."
    check_compose(repo)
    check_kubernetes(repo)
    check_dockerfile(repo)
    for failure in failures:
        print(f"FAIL {failure}")
    print(f"{passed} passed, {len(failures)} failed")
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
