//! A Kubernetes v1 `Pod` manifest (YAML or JSON) as a peapod pod: translated into the pod
//! spec's TOML, which is then read and checked like any spec file. One mapping serves
//! `peapod apply -f pod.yaml` (no cluster) and the Kubernetes node (`crate::node`), which
//! fills in what the cluster holds (config maps, secrets) through [`Context`].
//!
//! Every field of the manifest is either honoured, or accepted because it is the API server's
//! default or only concerns the scheduler (`nodeSelector`, `tolerations`, `resources.requests`,
//! ...), or refused by name: a field peapod cannot honour is never ignored
//! (`spec.containers[0].stdin: not supported by peapod`). What maps to what: docs/kubernetes.md.

use std::collections::BTreeMap;

use serde_json::Value;

use super::Problem;

/// What the translation needs besides the manifest.
#[derive(Debug, Default, Clone)]
pub struct Context {
    /// The pod's name on the board; `None`: `metadata.name`.
    pub name: Option<String>,
    /// Labels added to the manifest's.
    pub labels: BTreeMap<String, String>,
    /// Config maps by name (their `data`), for `configMap` volumes; `None`: there is no
    /// cluster to fetch them from.
    pub config_maps: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// Secrets by name (their decoded `data`), for `secret` volumes.
    pub secrets: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// The files of `projected` volumes, by volume name (the node makes them: a service
    /// account token, config map and secret keys, the pod's namespace and name); `None`: no
    /// cluster to make them.
    pub projected: Option<BTreeMap<String, BTreeMap<String, String>>>,
    /// Where `hostPath` volumes may point (prefixes); `None`: anywhere the spec's own checks
    /// allow (a local apply, whose caller's rights decide).
    pub host_paths: Option<Vec<std::path::PathBuf>>,
    /// Whether `image` may be a path relative to the manifest (a local file; the node has
    /// no manifest directory).
    pub relative_modules: bool,
}

/// Is `text` a Kubernetes object manifest (`apiVersion` and `kind` at the top level), as
/// opposed to a pod spec in TOML?
pub fn is_manifest(text: &str) -> bool {
    // (A TOML spec is seldom YAML at all, and never a mapping with these two keys.)
    serde_yaml_ng::from_str::<Value>(text).is_ok_and(|v| {
        v.get("apiVersion").is_some_and(Value::is_string)
            && v.get("kind").is_some_and(Value::is_string)
    })
}

/// Reads a manifest: a v1 Pod, or a problem naming what it is instead.
pub fn read(text: &str) -> Result<Value, Problem> {
    let value: Value = serde_yaml_ng::from_str(text).map_err(|e| Problem {
        line: e.location().map(|l| l.line()),
        field: "manifest".into(),
        message: format!("not a Kubernetes manifest: {e}"),
    })?;
    let api = value.get("apiVersion").and_then(Value::as_str);
    let kind = value.get("kind").and_then(Value::as_str);
    if api != Some("v1") || kind != Some("Pod") {
        return Err(Problem {
            line: None,
            field: "kind".into(),
            message: format!(
                "peapod runs a v1 Pod; this is {} {} (one Pod per file)",
                api.unwrap_or("(no apiVersion)"),
                kind.unwrap_or("(no kind)")
            ),
        });
    }
    Ok(value)
}

/// Fields peapod honours, or accepts as they are (defaults of the API server, scheduling
/// hints): a set field is fine when a pattern is the field's path or a prefix of it (`[]` for
/// any index). `@` stands for `spec.containers[]` and `spec.initContainers[]`.
const ACCEPTED: &[&str] = &[
    "apiVersion",
    "kind",
    "metadata",
    "status",
    // Scheduling, and what the API server fills in.
    "spec.nodeName",
    "spec.nodeSelector",
    "spec.affinity",
    "spec.tolerations",
    "spec.topologySpreadConstraints",
    "spec.schedulerName",
    "spec.priority",
    "spec.priorityClassName",
    "spec.preemptionPolicy",
    "spec.dnsPolicy",
    "spec.enableServiceLinks",
    "spec.serviceAccountName",
    "spec.serviceAccount",
    "spec.automountServiceAccountToken",
    "spec.restartPolicy",
    "spec.terminationGracePeriodSeconds",
    "spec.volumes[].name",
    "spec.volumes[].emptyDir.sizeLimit",
    "spec.volumes[].emptyDir.medium",
    "spec.volumes[].configMap.name",
    "spec.volumes[].configMap.items[].key",
    "spec.volumes[].configMap.items[].path",
    "spec.volumes[].configMap.defaultMode",
    "spec.volumes[].secret.secretName",
    "spec.volumes[].secret.items[].key",
    "spec.volumes[].secret.items[].path",
    "spec.volumes[].secret.defaultMode",
    "spec.volumes[].hostPath.path",
    "spec.volumes[].hostPath.type",
    // (Read by the node, which makes its files: see `Context::projected`.)
    "spec.volumes[].projected",
    "@.name",
    "@.image",
    "@.imagePullPolicy",
    "@.args",
    "@.env[].name",
    "@.env[].value",
    "@.ports[].containerPort",
    "@.ports[].hostPort",
    "@.ports[].hostIP",
    "@.ports[].protocol",
    "@.ports[].name",
    "@.resources.limits.cpu",
    "@.resources.limits.memory",
    "@.resources.requests",
    "@.volumeMounts[].name",
    "@.volumeMounts[].mountPath",
    "@.volumeMounts[].readOnly",
    "@.lifecycle.preStop.httpGet.path",
    "@.lifecycle.preStop.httpGet.port",
    "@.lifecycle.preStop.httpGet.scheme",
    "@.terminationMessagePath",
    "@.terminationMessagePolicy",
    "@.restartPolicy",
];

/// Probe fields, under `@.livenessProbe`, `@.readinessProbe` and `@.startupProbe`.
const PROBE: &[&str] = &[
    "tcpSocket.port",
    "httpGet.path",
    "httpGet.port",
    "httpGet.scheme",
    "initialDelaySeconds",
    "periodSeconds",
    "timeoutSeconds",
    "failureThreshold",
    "successThreshold",
];

/// Fields accepted with exactly these values: what the sandbox gives anyway (a module has no
/// user, no capabilities, no root file system to write).
const HARMLESS: &[(&str, Value)] = &[
    ("@.securityContext.privileged", Value::Bool(false)),
    (
        "@.securityContext.allowPrivilegeEscalation",
        Value::Bool(false),
    ),
    (
        "@.securityContext.readOnlyRootFilesystem",
        Value::Bool(true),
    ),
    ("@.securityContext.runAsNonRoot", Value::Bool(true)),
    ("@.stdin", Value::Bool(false)),
    ("@.tty", Value::Bool(false)),
    ("spec.hostNetwork", Value::Bool(false)),
    ("spec.hostPID", Value::Bool(false)),
    ("spec.hostIPC", Value::Bool(false)),
];

fn accepted(path: &str, value: &Value) -> bool {
    let general = path
        .replace("spec.containers[]", "@")
        .replace("spec.initContainers[]", "@");
    let covers = |pattern: &str| {
        general == pattern
            || (general.starts_with(pattern)
                && matches!(general.as_bytes()[pattern.len()], b'.' | b'['))
    };
    ACCEPTED.iter().any(|p| covers(p))
        || ["livenessProbe", "readinessProbe", "startupProbe"]
            .iter()
            .any(|probe| {
                PROBE
                    .iter()
                    .any(|f| covers(&format!("@.{probe}.{f}")))
            })
        || HARMLESS.iter().any(|(p, v)| general == *p && v == value)
        // `securityContext: {}` and the like: an empty object asks for nothing.
        || value.as_object().is_some_and(|o| o.is_empty())
        || value.is_null()
}

/// Every set field that is not [`accepted`], by its path (`spec.containers[0].stdin`).
fn refused(value: &Value) -> Vec<Problem> {
    fn walk(v: &Value, path: &mut String, general: &mut String, out: &mut Vec<Problem>) {
        if accepted(general, v) {
            return;
        }
        let children: Vec<(String, &Value, bool)> = match v {
            Value::Object(o) if prefix_of_accepted(general) => {
                o.iter().map(|(k, v)| (k.clone(), v, false)).collect()
            }
            Value::Array(a) if prefix_of_accepted(general) => (a.iter().enumerate())
                .map(|(i, v)| (i.to_string(), v, true))
                .collect(),
            _ => {
                out.push(Problem {
                    line: None,
                    field: path.clone(),
                    message: why(general),
                });
                return;
            }
        };
        for (key, child, index) in children {
            let (p, g) = (path.len(), general.len());
            if index {
                path.push_str(&format!("[{key}]"));
                general.push_str("[]");
            } else {
                for s in [&mut *path, &mut *general] {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(&key);
                }
            }
            walk(child, path, general, out);
            path.truncate(p);
            general.truncate(g);
        }
    }
    let mut out = Vec::new();
    walk(value, &mut String::new(), &mut String::new(), &mut out);
    out
}

/// Why a field is refused: said where there is more to say than "not supported".
fn why(general: &str) -> String {
    let general = general
        .replace("spec.containers[]", "@")
        .replace("spec.initContainers[]", "@");
    let reason = match general.as_str() {
        "@.command" => "a module has no entrypoint to replace: put its arguments in args",
        g if g.ends_with("Probe.exec") || g.ends_with("Probe.grpc") => {
            "peapod probes with httpGet or tcpSocket (a module has no exec)"
        }
        "@.env[].valueFrom" | "@.envFrom" => {
            "variables come from env values (or env_from_files of a TOML spec)"
        }
        "@.volumeMounts[].subPath" => "mount the whole volume (no subPath)",
        _ => "not supported by peapod",
    };
    format!("{reason} (docs/kubernetes.md lists what is)")
}

fn is_container_list(general: &str) -> bool {
    general == "spec.containers" || general == "spec.initContainers"
}

/// Is `general` (a path with `[]`) on the way to an accepted field?
fn prefix_of_accepted(general: &str) -> bool {
    let general = general
        .replace("spec.containers[]", "@")
        .replace("spec.initContainers[]", "@");
    let on_way = |p: &str| {
        p.starts_with(general.as_str())
            && matches!(p.as_bytes().get(general.len()), Some(b'.' | b'['))
    };
    general.is_empty()
        || general == "spec"
        || is_container_list(&general)
        || general == "@"
        || ACCEPTED.iter().any(|p| on_way(p))
        || HARMLESS.iter().any(|(p, _)| on_way(p))
        || ["livenessProbe", "readinessProbe", "startupProbe"]
            .iter()
            .any(|probe| {
                general == format!("@.{probe}")
                    || PROBE.iter().any(|f| on_way(&format!("@.{probe}.{f}")))
            })
}

/// Translates a Pod (as [`read`] gives it) into the pod spec's TOML. All problems at once,
/// each naming the manifest's field.
pub fn translate(pod: &Value, ctx: &Context) -> Result<String, Vec<Problem>> {
    let mut problems = refused(pod);
    let mut problem = |field: String, message: String| {
        problems.push(Problem {
            line: None,
            field,
            message,
        })
    };
    let str_at = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).map(str::to_string);
    let spec = pod.get("spec").cloned().unwrap_or(Value::Null);
    let meta = pod.get("metadata").cloned().unwrap_or(Value::Null);

    let mut pod_t = toml::Table::new();
    let name = ctx.name.clone().or_else(|| str_at(&meta, "name"));
    match name {
        Some(n) => {
            pod_t.insert("name".into(), n.into());
        }
        None => problem("metadata.name".into(), "a pod needs a name".into()),
    }
    let mut labels: toml::Table = (meta.get("labels").and_then(Value::as_object))
        .map(|o| {
            o.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().into()))
                .collect()
        })
        .unwrap_or_default();
    labels.extend(
        ctx.labels
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into())),
    );
    if !labels.is_empty() {
        pod_t.insert("labels".into(), labels.into());
    }
    if let Some(p) = str_at(&spec, "restartPolicy") {
        pod_t.insert("restart_policy".into(), p.into());
    }
    if let Some(g) = spec
        .get("terminationGracePeriodSeconds")
        .and_then(Value::as_u64)
    {
        pod_t.insert("termination_grace_period".into(), format!("{g}s").into());
    }

    let mut volumes = Vec::new();
    for (i, v) in array(&spec, "volumes").iter().enumerate() {
        let at = |f: &str| format!("spec.volumes[{i}].{f}");
        let mut t = toml::Table::new();
        t.insert("name".into(), str_at(v, "name").unwrap_or_default().into());
        if let Some(e) = v.get("emptyDir") {
            let mut d = toml::Table::new();
            match str_at(e, "medium").as_deref() {
                None | Some("") => {}
                Some("Memory") if e.get("sizeLimit").is_some() => {}
                Some("Memory") => problem(
                    at("emptyDir.medium"),
                    "a Memory emptyDir needs a sizeLimit (it is a tmpfs of that size)".into(),
                ),
                Some(m) => problem(
                    at("emptyDir.medium"),
                    format!("{m:?} is not a medium peapod has (\"\" or \"Memory\")"),
                ),
            }
            if let Some(s) = e.get("sizeLimit") {
                match quantity_bytes(s) {
                    Ok(b) => {
                        d.insert("size_limit".into(), format!("{b}B").into());
                    }
                    Err(m) => problem(at("emptyDir.sizeLimit"), m),
                }
            }
            t.insert("empty_dir".into(), d.into());
        } else if let Some((kind, src)) = ["configMap", "secret"]
            .into_iter()
            .find_map(|k| v.get(k).map(|src| (k, src)))
        {
            let (word, name_key, held, nowhere) = if kind == "configMap" {
                (
                    "config map",
                    "name",
                    &ctx.config_maps,
                    "config maps live in a cluster: applied here, write the files into the spec \
                     (a files volume, docs/spec.md) or run the pod through the node",
                )
            } else {
                (
                    "secret",
                    "secretName",
                    &ctx.secrets,
                    "secrets live in a cluster: applied here, use a secret volume of a host \
                     file (docs/spec.md)",
                )
            };
            // A config map's or a secret's data, as a read-only `files` volume.
            let name = str_at(src, name_key).unwrap_or_default();
            match held.as_ref().map(|all| all.get(&name)) {
                None => problem(at(kind), nowhere.into()),
                Some(None) => problem(
                    at(&format!("{kind}.{name_key}")),
                    format!("{word} {name:?} not found"),
                ),
                Some(Some(data)) => match files(src, data, &at(kind)) {
                    Ok(f) => {
                        t.insert("files".into(), f.into());
                    }
                    Err((f, m)) => problem(f, m),
                },
            }
        } else if v.get("projected").is_some() {
            let name = str_at(v, "name").unwrap_or_default();
            match ctx.projected.as_ref().map(|p| p.get(&name)) {
                Some(Some(f)) => {
                    let f: toml::Table = (f.iter())
                        .map(|(k, v)| (k.clone(), v.clone().into()))
                        .collect();
                    t.insert("files".into(), f.into());
                }
                _ => problem(
                    at("projected"),
                    "a projected volume (where the API server puts a service account token) \
                     is made by a node of a cluster: applied here, set \
                     automountServiceAccountToken: false, or write the files into the spec"
                        .into(),
                ),
            }
        } else if let Some(h) = v.get("hostPath") {
            let path = str_at(h, "path").unwrap_or_default();
            if let Some(allowed) = &ctx.host_paths {
                let p = std::path::Path::new(&path);
                if !allowed.iter().any(|a| p.starts_with(a)) {
                    problem(
                        at("hostPath.path"),
                        format!(
                            "{path:?}: this node allows no hostPath there (its [kubernetes] \
                             host_paths: {}): any user who can create pods would reach the \
                             board's files",
                            if allowed.is_empty() {
                                "none".to_string()
                            } else {
                                allowed
                                    .iter()
                                    .map(|a| a.display().to_string())
                                    .collect::<Vec<_>>()
                                    .join(", ")
                            }
                        ),
                    );
                }
            }
            let mut d = toml::Table::new();
            d.insert("path".into(), path.into());
            match str_at(h, "type").as_deref() {
                None | Some("") | Some("Directory") => {}
                Some("DirectoryOrCreate") => {
                    d.insert("type".into(), "DirectoryOrCreate".into());
                }
                Some(other) => problem(
                    at("hostPath.type"),
                    format!("{other:?}: peapod mounts directories (Directory, DirectoryOrCreate)"),
                ),
            }
            t.insert("host_path".into(), d.into());
        }
        volumes.push(toml::Value::Table(t));
    }

    let mut lists = toml::Table::new();
    lists.insert("pod".into(), pod_t.into());
    for (list, key) in [
        ("initContainers", "init_containers"),
        ("containers", "containers"),
    ] {
        let mut out = Vec::new();
        for (i, c) in array(&spec, list).iter().enumerate() {
            out.push(toml::Value::Table(container(
                c,
                &format!("spec.{list}[{i}]"),
                list == "initContainers",
                ctx,
                &mut problem,
            )));
        }
        if !out.is_empty() {
            lists.insert(key.into(), out.into());
        }
    }
    if !volumes.is_empty() {
        lists.insert("volumes".into(), volumes.into());
    }
    if problems.is_empty() {
        Ok(toml::to_string(&lists).expect("a TOML table serializes"))
    } else {
        Err(problems)
    }
}

fn array<'a>(v: &'a Value, key: &str) -> &'a [Value] {
    v.get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A config map's or secret's data as a `files` table (`items` picks keys and names them).
fn files(
    volume: &Value,
    data: &BTreeMap<String, String>,
    at: &str,
) -> Result<toml::Table, (String, String)> {
    let items = array(volume, "items");
    if items.is_empty() {
        return Ok(data
            .iter()
            .map(|(k, v)| (k.clone(), v.clone().into()))
            .collect());
    }
    let mut t = toml::Table::new();
    for (j, item) in items.iter().enumerate() {
        let key = item.get("key").and_then(Value::as_str).unwrap_or_default();
        let path = item.get("path").and_then(Value::as_str).unwrap_or(key);
        let Some(value) = data.get(key) else {
            return Err((format!("{at}.items[{j}].key"), format!("no key {key:?}")));
        };
        t.insert(path.to_string(), value.clone().into());
    }
    Ok(t)
}

/// One container of the manifest as a `[[containers]]` (or `[[init_containers]]`) table.
fn container(
    c: &Value,
    at: &str,
    init: bool,
    ctx: &Context,
    problem: &mut impl FnMut(String, String),
) -> toml::Table {
    let mut t = toml::Table::new();
    let s = |key: &str| c.get(key).and_then(Value::as_str).map(str::to_string);
    t.insert("name".into(), s("name").unwrap_or_default().into());
    match module_of(s("image").as_deref().unwrap_or_default(), ctx) {
        Ok(m) => {
            t.insert("module".into(), m.into());
        }
        Err(m) => {
            problem(format!("{at}.image"), m);
            t.insert("module".into(), "-".into());
        }
    }
    if let Some(args) = c.get("args").and_then(Value::as_array) {
        let args: Vec<toml::Value> = (args.iter())
            .map(|a| a.as_str().unwrap_or_default().into())
            .collect();
        t.insert("args".into(), args.into());
    }
    let mut env = toml::Table::new();
    for e in array(c, "env") {
        let name = e.get("name").and_then(Value::as_str).unwrap_or_default();
        let value = e.get("value").and_then(Value::as_str).unwrap_or_default();
        env.insert(name.into(), value.into());
    }
    if !env.is_empty() {
        t.insert("env".into(), env.into());
    }
    if init {
        if let Some(p) = s("restartPolicy") {
            t.insert("restart_policy".into(), p.into());
        }
    } else if c.get("restartPolicy").is_some() {
        problem(
            format!("{at}.restartPolicy"),
            "only an init container has its own restartPolicy (Always: a sidecar)".into(),
        );
    }
    let named_ports: BTreeMap<String, i64> = array(c, "ports")
        .iter()
        .filter_map(|p| {
            Some((
                p.get("name")?.as_str()?.to_string(),
                p.get("containerPort")?.as_i64()?,
            ))
        })
        .collect();
    let mut ports = Vec::new();
    for p in array(c, "ports") {
        let mut pt = toml::Table::new();
        for (from, to) in [
            ("containerPort", "container_port"),
            ("hostPort", "host_port"),
        ] {
            if let Some(n) = p.get(from).and_then(Value::as_i64) {
                pt.insert(to.into(), n.into());
            }
        }
        for (from, to) in [("protocol", "protocol"), ("hostIP", "host_ip")] {
            if let Some(v) = p.get(from).and_then(Value::as_str) {
                pt.insert(to.into(), v.into());
            }
        }
        ports.push(toml::Value::Table(pt));
    }
    if !ports.is_empty() {
        t.insert("ports".into(), ports.into());
    }
    if let Some(limits) = c.pointer("/resources/limits") {
        if let Some(cpu) = limits.get("cpu") {
            match quantity_millis(cpu) {
                Ok(m) => {
                    t.insert("cpu_limit".into(), format!("{m}m").into());
                }
                Err(m) => problem(format!("{at}.resources.limits.cpu"), m),
            }
        }
        if let Some(mem) = limits.get("memory") {
            match quantity_bytes(mem) {
                Ok(b) => {
                    t.insert(
                        "memory_limit_mib".into(),
                        (b.div_ceil(1 << 20) as i64).into(),
                    );
                }
                Err(m) => problem(format!("{at}.resources.limits.memory"), m),
            }
        }
    }
    let mounts: Vec<toml::Value> = array(c, "volumeMounts")
        .iter()
        .map(|m| {
            let mut mt = toml::Table::new();
            for (from, to) in [("name", "name"), ("mountPath", "mount_path")] {
                mt.insert(
                    to.into(),
                    m.get(from)
                        .and_then(Value::as_str)
                        .unwrap_or_default()
                        .into(),
                );
            }
            if let Some(r) = m.get("readOnly").and_then(Value::as_bool) {
                mt.insert("read_only".into(), r.into());
            }
            toml::Value::Table(mt)
        })
        .collect();
    if !mounts.is_empty() {
        t.insert("volume_mounts".into(), mounts.into());
    }
    for (from, to) in [
        ("livenessProbe", "liveness_probe"),
        ("readinessProbe", "readiness_probe"),
        ("startupProbe", "startup_probe"),
    ] {
        if let Some(p) = c.get(from) {
            let at = format!("{at}.{from}");
            t.insert(to.into(), probe(p, &at, &named_ports, problem).into());
        }
    }
    if let Some(h) = c.pointer("/lifecycle/preStop/httpGet") {
        let mut pre = toml::Table::new();
        pre.insert(
            "http_get".into(),
            http_get(
                h,
                &format!("{at}.lifecycle.preStop.httpGet"),
                &named_ports,
                problem,
            )
            .into(),
        );
        let mut l = toml::Table::new();
        l.insert("pre_stop".into(), pre.into());
        t.insert("lifecycle".into(), l.into());
    }
    t
}

fn probe(
    p: &Value,
    at: &str,
    named: &BTreeMap<String, i64>,
    problem: &mut impl FnMut(String, String),
) -> toml::Table {
    let mut t = toml::Table::new();
    if let Some(h) = p.get("httpGet") {
        t.insert(
            "http_get".into(),
            http_get(h, &format!("{at}.httpGet"), named, problem).into(),
        );
    } else if let Some(s) = p.get("tcpSocket") {
        let mut tcp = toml::Table::new();
        tcp.insert(
            "port".into(),
            port(
                s.get("port"),
                &format!("{at}.tcpSocket.port"),
                named,
                problem,
            )
            .into(),
        );
        t.insert("tcp_socket".into(), tcp.into());
    } else if p.get("exec").is_none() && p.get("grpc").is_none() {
        // (exec and grpc are refused by name already.)
        problem(at.into(), "a probe needs httpGet or tcpSocket".into());
    }
    for (from, to) in [
        ("initialDelaySeconds", "initial_delay"),
        ("periodSeconds", "period"),
        ("timeoutSeconds", "timeout"),
    ] {
        if let Some(n) = p.get(from).and_then(Value::as_i64) {
            t.insert(to.into(), n.into());
        }
    }
    for (from, to) in [
        ("failureThreshold", "failure_threshold"),
        ("successThreshold", "success_threshold"),
    ] {
        if let Some(n) = p.get(from).and_then(Value::as_i64) {
            t.insert(to.into(), n.into());
        }
    }
    t
}

fn http_get(
    h: &Value,
    at: &str,
    named: &BTreeMap<String, i64>,
    problem: &mut impl FnMut(String, String),
) -> toml::Table {
    let mut t = toml::Table::new();
    if let Some(path) = h.get("path").and_then(Value::as_str) {
        t.insert("path".into(), path.into());
    }
    t.insert(
        "port".into(),
        port(h.get("port"), &format!("{at}.port"), named, problem).into(),
    );
    match h.get("scheme").and_then(Value::as_str) {
        None | Some("HTTP") => {}
        Some(s) => problem(
            format!("{at}.scheme"),
            format!("{s:?}: peapod probes over plain HTTP (inside the pod)"),
        ),
    }
    t
}

/// A probe's port: a number, or the name of one of the container's ports.
fn port(
    v: Option<&Value>,
    at: &str,
    named: &BTreeMap<String, i64>,
    problem: &mut impl FnMut(String, String),
) -> i64 {
    match v {
        Some(Value::Number(n)) => n.as_i64().unwrap_or(0),
        Some(Value::String(s)) => match s.parse::<i64>().ok().or_else(|| named.get(s).copied()) {
            Some(n) => n,
            None => {
                problem(
                    at.into(),
                    format!("{s:?} names none of the container's ports"),
                );
                0
            }
        },
        _ => {
            problem(at.into(), "a port is needed".into());
            0
        }
    }
}

/// The module an `image` names: `file:///abs/app.wasm` or an absolute path (a file on the
/// board), `oci://REGISTRY/REPO:TAG` or `REGISTRY/REPO:TAG` (a registry), or for a local
/// apply a path relative to the manifest (`./app.wasm`, `app.wasm`).
fn module_of(image: &str, ctx: &Context) -> Result<String, String> {
    if image.is_empty() {
        return Err("names no module".into());
    }
    if let Some(path) = image.strip_prefix("file://") {
        return if path.starts_with('/') {
            Ok(path.into())
        } else {
            Err(format!(
                "{image:?}: a file:// image is an absolute path (file:///usr/share/app.wasm)"
            ))
        };
    }
    if image.starts_with('/') || image.starts_with(super::IMAGE_SCHEME) {
        return Ok(image.into());
    }
    let local = image.starts_with("./")
        || image.starts_with("../")
        || ((image.ends_with(".wasm") || image.ends_with(".cwasm")) && !image.contains(':'));
    if local {
        return if ctx.relative_modules {
            Ok(image.into())
        } else {
            Err(format!(
                "{image:?}: a node has no directory for a relative module: write \
                 file:///ABSOLUTE/PATH.wasm or a registry reference"
            ))
        };
    }
    super::Image::reference(image)
        .map(|i| format!("{}{}", super::IMAGE_SCHEME, i.reference))
        .map_err(|e| format!("neither a module file (file:///PATH.wasm) nor an OCI reference: {e}"))
}

/// A Kubernetes quantity (`128Mi`, `1G`, `500M`, `1e9`, `1048576`) in bytes.
fn quantity_bytes(v: &Value) -> Result<u64, String> {
    let text = quantity_text(v);
    let bad = || format!("{text:?} is not a size (write e.g. \"64Mi\" or \"1Gi\")");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().map_err(|_| bad())?;
    let mult: f64 = match unit {
        "" => 1.0,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1_048_576.0,
        "Gi" => 1_073_741_824.0,
        "Ti" => 1_099_511_627_776.0,
        u if u.starts_with('e') => 10f64.powi(u[1..].parse::<i32>().map_err(|_| bad())?),
        _ => return Err(bad()),
    };
    let bytes = (n * mult).ceil();
    if !(0.0..1.8e19).contains(&bytes) {
        return Err(bad());
    }
    Ok(bytes as u64)
}

/// A CPU quantity (`250m`, `1`, `1.5`) in millicores.
fn quantity_millis(v: &Value) -> Result<u64, String> {
    let text = quantity_text(v);
    super::parse_millicores(&text)
        .map(u64::from)
        .map_err(|e| e.replace("write millicores", "write e.g. \"250m\" or \"1\" (cores)"))
}

fn quantity_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.trim().to_string(),
        other => other.to_string(),
    }
}

/// The pod spec's field (`containers[0].ports[0].host_port`) in the manifest's words
/// (`spec.containers[0].ports[0].hostPort`), for problems found after the translation.
pub fn manifest_field(field: &str) -> String {
    let renamed = [
        ("pod.name", "metadata.name"),
        ("pod.labels", "metadata.labels"),
        ("pod.restart_policy", "spec.restartPolicy"),
        (
            "pod.termination_grace_period",
            "spec.terminationGracePeriodSeconds",
        ),
        ("memory_limit_mib", "resources.limits.memory"),
        ("cpu_limit", "resources.limits.cpu"),
        ("module", "image"),
        ("files", "configMap"),
        ("lifecycle.pre_stop", "lifecycle.preStop"),
    ];
    let mut f = field.to_string();
    for (from, to) in renamed {
        f = f.replace(from, to);
    }
    let camel: String = {
        let mut out = String::new();
        let mut up = false;
        for ch in f.chars() {
            if ch == '_' {
                up = true;
            } else if up {
                out.extend(ch.to_uppercase());
                up = false;
            } else {
                out.push(ch);
            }
        }
        out
    };
    if camel.starts_with("metadata") || camel.starts_with("spec.") {
        camel
    } else {
        format!("spec.{camel}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(yaml: &str) -> Value {
        read(yaml).unwrap()
    }

    const WEB: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  labels: { app: web }
spec:
  restartPolicy: Always
  terminationGracePeriodSeconds: 5
  initContainers:
  - name: sync
    image: file:///usr/share/peapod/guests/sync.wasm
    restartPolicy: Always
  containers:
  - name: app
    image: file:///usr/share/peapod/guests/kv-server.wasm
    imagePullPolicy: IfNotPresent
    args: ["--port", "8080"]
    env: [{ name: MODE, value: edge }]
    ports: [{ name: http, containerPort: 8080, hostPort: 18080, protocol: TCP }]
    resources: { limits: { cpu: 500m, memory: 64Mi }, requests: { cpu: 100m } }
    readinessProbe: { httpGet: { path: /healthz, port: http, scheme: HTTP }, periodSeconds: 1 }
    livenessProbe: { tcpSocket: { port: 8080 }, failureThreshold: 3 }
    volumeMounts: [{ name: cfg, mountPath: /etc/app, readOnly: true }, { name: data, mountPath: /data }]
    securityContext: { allowPrivilegeEscalation: false }
    terminationMessagePath: /dev/termination-log
  volumes:
  - { name: cfg, configMap: { name: web-config } }
  - { name: data, emptyDir: { sizeLimit: 16Mi } }
  dnsPolicy: ClusterFirst
  tolerations: [{ key: peapod.dev/wasm, operator: Exists, effect: NoSchedule }]
"#;

    fn cluster() -> Context {
        Context {
            config_maps: Some(BTreeMap::from([(
                "web-config".to_string(),
                BTreeMap::from([("app.conf".to_string(), "mode=edge\n".to_string())]),
            )])),
            secrets: Some(BTreeMap::new()),
            host_paths: Some(vec![]),
            ..Context::default()
        }
    }

    #[test]
    fn a_pod_becomes_a_spec_that_reads() {
        let toml = translate(&pod(WEB), &cluster()).unwrap();
        let spec = super::super::PodSpec::parse(std::path::Path::new("/k/web.toml"), &toml)
            .unwrap_or_else(|e| panic!("{e}\n{toml}"));
        assert_eq!(spec.name, "web");
        assert_eq!(spec.containers.len(), 2);
        let sync = &spec.containers[0];
        assert_eq!(sync.kind, super::super::Kind::Sidecar);
        let app = &spec.containers[1];
        assert_eq!(app.args, ["--port", "8080"]);
        assert_eq!(app.env, [("MODE".to_string(), "edge".to_string())]);
        assert_eq!(app.cpu_limit, Some(500));
        assert_eq!(app.memory_limit, 64 << 20);
        assert_eq!(app.ports[0].host_port, Some(18080));
        assert!(app.probes.readiness.is_some() && app.probes.liveness.is_some());
        assert_eq!(spec.volumes.len(), 2);
        assert!(toml.contains("mode=edge"), "{toml}");
        assert!(
            toml.contains("port = 8080"),
            "a named port resolves: {toml}"
        );
    }

    #[test]
    fn every_field_peapod_cannot_honour_is_named() {
        let yaml = WEB
            .replace(
                "    imagePullPolicy",
                "    stdin: true\n    workingDir: /x\n    imagePullPolicy",
            )
            .replace("  dnsPolicy", "  hostNetwork: true\n  dnsPolicy")
            .replace(
                "periodSeconds: 1 }",
                "periodSeconds: 1, grpc: { port: 1 } }",
            );
        let problems = translate(&pod(&yaml), &cluster()).unwrap_err();
        let fields: Vec<&str> = problems.iter().map(|p| p.field.as_str()).collect();
        for f in [
            "spec.containers[0].stdin",
            "spec.containers[0].workingDir",
            "spec.hostNetwork",
            "spec.containers[0].readinessProbe.grpc",
        ] {
            assert!(fields.contains(&f), "{f} not in {fields:?}");
        }
        assert_eq!(problems.len(), 4, "{problems:?}");
    }

    #[test]
    fn host_paths_only_where_the_node_allows() {
        let yaml = WEB.replace(
            "configMap: { name: web-config }",
            "hostPath: { path: /etc }",
        );
        let problems = translate(&pod(&yaml), &cluster()).unwrap_err();
        assert_eq!(problems[0].field, "spec.volumes[0].hostPath.path");
        assert!(
            problems[0].message.contains("allows no hostPath"),
            "{problems:?}"
        );
        let allowed = Context {
            host_paths: Some(vec!["/srv".into()]),
            ..cluster()
        };
        let yaml = yaml.replace("/etc", "/srv/site");
        assert!(translate(&pod(&yaml), &allowed).is_ok());
    }

    #[test]
    fn projected_volumes_come_from_the_node() {
        let yaml = WEB.replace(
            "configMap: { name: web-config }",
            "projected: { sources: [{ serviceAccountToken: { path: token } }] }",
        );
        let problems = translate(&pod(&yaml), &cluster()).unwrap_err();
        assert_eq!(
            problems[0].field, "spec.volumes[0].projected",
            "{problems:?}"
        );
        assert!(problems[0].message.contains("automountServiceAccountToken"));
        let made = Context {
            projected: Some(BTreeMap::from([(
                "cfg".to_string(),
                BTreeMap::from([("token".to_string(), "t0k3n".to_string())]),
            )])),
            ..cluster()
        };
        let toml = translate(&pod(&yaml), &made).unwrap();
        assert!(toml.contains("t0k3n"), "{toml}");
    }

    #[test]
    fn images_name_files_or_registries() {
        let local = Context {
            relative_modules: true,
            ..Context::default()
        };
        assert_eq!(
            module_of("file:///a/b.wasm", &cluster()).unwrap(),
            "/a/b.wasm"
        );
        assert_eq!(module_of("app.wasm", &local).unwrap(), "app.wasm");
        assert!(module_of("app.wasm", &cluster()).is_err());
        assert_eq!(
            module_of("registry.local:5000/app:v1", &cluster()).unwrap(),
            "oci://registry.local:5000/app:v1"
        );
        let e = module_of("nginx", &cluster()).unwrap_err();
        assert!(e.contains("names no registry"), "{e}");
    }

    #[test]
    fn quantities() {
        let q = |s: &str| quantity_bytes(&Value::String(s.into()));
        assert_eq!(q("64Mi").unwrap(), 64 << 20);
        assert_eq!(q("1G").unwrap(), 1_000_000_000);
        assert_eq!(q("1e3").unwrap(), 1000);
        assert!(q("lots").is_err());
        let m = |s: &str| quantity_millis(&Value::String(s.into()));
        assert_eq!(m("250m").unwrap(), 250);
        assert_eq!(m("1.5").unwrap(), 1500);
    }

    #[test]
    fn the_example_manifest_reads() {
        let text = include_str!("../../../configs/k8s-pod.yaml");
        let spec = super::super::PodSpec::parse(std::path::Path::new("/c/k8s-pod.yaml"), text)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(spec.containers.len(), 2);
        assert_eq!(spec.containers[0].kind, super::super::Kind::Sidecar);
    }

    #[test]
    fn only_a_v1_pod_is_read() {
        assert!(is_manifest("apiVersion: v1\nkind: Pod\n"));
        assert!(is_manifest("{\"apiVersion\": \"v1\", \"kind\": \"Pod\"}"));
        assert!(!is_manifest("[pod]\nname = \"kind\"\n"));
        let e = read("apiVersion: apps/v1\nkind: Deployment\n").unwrap_err();
        assert!(e.message.contains("apps/v1 Deployment"), "{e:?}");
    }

    #[test]
    fn fields_in_the_manifests_words() {
        assert_eq!(
            manifest_field("containers[0].ports[0].host_port"),
            "spec.containers[0].ports[0].hostPort"
        );
        assert_eq!(
            manifest_field("containers[1].memory_limit_mib"),
            "spec.containers[1].resources.limits.memory"
        );
        assert_eq!(manifest_field("pod.name"), "metadata.name");
    }
}
