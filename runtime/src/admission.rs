//! What a pod may ask of the board, decided before anything is made (as the kubelet admits a
//! pod against the node's allocatable resources).
//!
//! - [`check`], one spec against the settings: its grace period at most
//!   `limits.max_grace_period`, its containers at most `limits.max_containers` (for a caller
//!   other than root, `quotas.containers`). Problems of the spec's fields, as validation's.
//! - [`admit`], one spec against every pod admitted already: the memory every pod is promised
//!   ([`promised`]: container memory limits and tmpfs sizes, which no kill frees) fits
//!   `limits.allocatable_memory`, for everyone; and a caller other than root stays within the
//!   per-user [`Quotas`] (pods, memory, published host ports).

use crate::caller::Caller;
use crate::config::{Config, Quotas};
use crate::spec::{Kind, PodSpec, Problem, VolumeKind};

/// The problems of `spec` against the settings' per-pod bounds.
pub(crate) fn check(spec: &PodSpec, cfg: &Config, caller: Caller) -> Vec<Problem> {
    let mut problems = Vec::new();
    let max_grace = cfg.limits.max_grace_period;
    if spec.termination_grace_period > max_grace {
        problems.push(Problem {
            line: None,
            field: "pod.termination_grace_period".into(),
            message: format!(
                "{} is longer than this board allows, {} (limits.max_grace_period)",
                humantime::format_duration(spec.termination_grace_period),
                humantime::format_duration(max_grace)
            ),
        });
    }
    let (max, setting) = if caller.is_root() {
        (cfg.limits.max_containers, "limits.max_containers")
    } else {
        (
            cfg.quotas.containers.min(cfg.limits.max_containers),
            "quotas.containers",
        )
    };
    if spec.containers.len() > max {
        problems.push(Problem {
            line: None,
            field: "containers".into(),
            message: format!(
                "{} containers (init containers included); at most {max} are allowed ({setting})",
                spec.containers.len()
            ),
        });
    }
    problems
}

/// The memory pod `spec` may hold at once: its running containers' memory limits (the app
/// containers and native sidecars together, plus the largest plain init container, which runs
/// before them: an upper bound) and the `size_limit` of each tmpfs `empty_dir`.
pub(crate) fn promised(spec: &PodSpec) -> u64 {
    let together: u64 = spec
        .containers
        .iter()
        .filter(|c| c.kind != Kind::Init)
        .map(|c| c.memory_limit)
        .sum();
    let init = spec
        .containers
        .iter()
        .filter(|c| c.kind == Kind::Init)
        .map(|c| c.memory_limit)
        .max()
        .unwrap_or(0);
    let tmpfs: u64 = spec
        .volumes
        .iter()
        .filter_map(|v| match v.kind {
            VolumeKind::EmptyDir { size_limit } => size_limit,
            _ => None,
        })
        .sum();
    together.saturating_add(init).saturating_add(tmpfs)
}

/// A pod admitted already: whose it is and what it asked.
pub(crate) struct Admitted<'a> {
    pub owner: u32,
    pub spec: &'a PodSpec,
}

/// Why a pod is not admitted: the figures, in one sentence.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Unfit(pub String);

/// Whether pod `spec`, asked for by `caller`, fits beside the pods `others` (every pod admitted
/// already, the one it replaces left out).
pub(crate) fn admit(
    cfg: &Config,
    caller: Caller,
    spec: &PodSpec,
    others: &[Admitted<'_>],
) -> Result<(), Unfit> {
    let needs = promised(spec);
    let allocatable = cfg.limits.allocatable_memory;
    let used: u64 = others.iter().map(|a| promised(a.spec)).sum();
    let free = allocatable.saturating_sub(used);
    if needs > free {
        return Err(Unfit(format!(
            "pod {} needs {} of memory, {} of {} allocatable is free \
             (limits.allocatable_memory; container memory limits and tmpfs sizes count)",
            spec.name,
            size(needs),
            size(free),
            size(allocatable)
        )));
    }
    if caller.is_root() {
        return Ok(());
    }
    let uid = caller.uid;
    let q: &Quotas = &cfg.quotas;
    let theirs: Vec<&PodSpec> = others
        .iter()
        .filter(|a| a.owner == uid)
        .map(|a| a.spec)
        .collect();
    if theirs.len() >= q.pods {
        return Err(Unfit(format!(
            "user {uid} has {} pods, the most allowed (quotas.pods = {})",
            theirs.len(),
            q.pods
        )));
    }
    let mine: u64 = theirs.iter().map(|s| promised(s)).sum();
    let left = q.memory.saturating_sub(mine);
    if needs > left {
        return Err(Unfit(format!(
            "pod {} needs {} of memory, {} of user {uid}'s {} is free (quotas.memory)",
            spec.name,
            size(needs),
            size(left),
            size(q.memory)
        )));
    }
    let ports = spec.published_ports().len();
    let held: usize = theirs.iter().map(|s| s.published_ports().len()).sum();
    if ports + held > q.published_ports {
        return Err(Unfit(format!(
            "pod {} publishes {ports} host ports, user {uid}'s pods {held} already; \
             at most {} are allowed (quotas.published_ports)",
            spec.name, q.published_ports
        )));
    }
    Ok(())
}

/// A size as people read it: `128 GiB`, `17.2 GiB`, `512 MiB`, `64 KiB`.
pub(crate) fn size(bytes: u64) -> String {
    let units = [(30, "GiB"), (20, "MiB"), (10, "KiB")];
    for (shift, unit) in units {
        if bytes >= 1 << shift {
            let v = bytes as f64 / (1u64 << shift) as f64;
            let text = format!("{v:.1}");
            let text = text.strip_suffix(".0").unwrap_or(&text);
            return format!("{text} {unit}");
        }
    }
    format!("{bytes} B")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use std::time::Duration;

    fn spec(name: &str, body: &str) -> PodSpec {
        PodSpec::parse(
            Path::new("/p/pod.toml"),
            &format!("[pod]\nname = \"{name}\"\n{body}"),
        )
        .unwrap()
    }

    fn container(name: &str, mib: u64) -> String {
        format!(
            "[[containers]]\nname = \"{name}\"\nmodule = \"m.wasm\"\nmemory_limit_mib = {mib}\n"
        )
    }

    const ROOT: Caller = Caller {
        uid: 0,
        gid: 0,
        pid: 0,
    };
    const USER: Caller = Caller {
        uid: 1000,
        gid: 1000,
        pid: 0,
    };

    fn board(allocatable: u64) -> Config {
        let mut cfg = Config::default();
        cfg.limits.allocatable_memory = allocatable;
        cfg
    }

    #[test]
    fn what_a_pod_is_promised() {
        let s = spec(
            "p",
            &format!(
                "[[volumes]]\nname = \"t\"\nempty_dir = {{ size_limit = \"100MiB\" }}\n\
                 [[volumes]]\nname = \"d\"\nempty_dir = {{}}\n\
                 [[init_containers]]\nname = \"i1\"\nmodule = \"m.wasm\"\nmemory_limit_mib = 40\n\
                 [[init_containers]]\nname = \"i2\"\nmodule = \"m.wasm\"\nmemory_limit_mib = 30\n\
                 [[init_containers]]\nname = \"side\"\nmodule = \"m.wasm\"\nmemory_limit_mib = 5\n\
                 restart_policy = \"Always\"\n{}{}",
                container("a", 10),
                container("b", 20)
            ),
        );
        // 10 + 20 + the sidecar's 5, the largest init container's 40, the tmpfs's 100.
        assert_eq!(promised(&s), (35 + 40 + 100) << 20);
        // Without a limit, a container is promised the default.
        let plain = spec("q", "[[containers]]\nname = \"a\"\nmodule = \"m.wasm\"\n");
        assert_eq!(
            promised(&plain),
            crate::spec::DEFAULT_MEMORY_LIMIT_MIB << 20
        );
    }

    /// Round 2, finding 3: two containers at 64 GiB, or a 100 GiB tmpfs, were accepted from
    /// anyone. A pod that does not fit is refused, naming the figures, root's too.
    #[test]
    fn a_pod_that_does_not_fit_the_board_is_refused_for_everyone() {
        let cfg = board(18 << 30);
        let huge = spec(
            "huge",
            &format!("{}{}", container("a", 64 << 10), container("b", 64 << 10)),
        );
        let e = admit(&cfg, ROOT, &huge, &[]).unwrap_err();
        assert_eq!(
            e.0,
            "pod huge needs 128 GiB of memory, 18 GiB of 18 GiB allocatable is free \
             (limits.allocatable_memory; container memory limits and tmpfs sizes count)"
        );
        let tmpfs = spec(
            "tmp",
            &format!(
                "[[volumes]]\nname = \"t\"\nempty_dir = {{ size_limit = \"100GiB\" }}\n{}",
                container("a", 1)
            ),
        );
        assert!(admit(&cfg, USER, &tmpfs, &[]).is_err());
        // What the others hold counts: 800 MiB of 18 GiB leaves 17.2 GiB.
        let held = spec("held", &container("a", 800));
        let others = [Admitted {
            owner: 0,
            spec: &held,
        }];
        let e = admit(&cfg, ROOT, &huge, &others).unwrap_err();
        assert!(
            e.0.contains("17.2 GiB of 18 GiB allocatable is free"),
            "{e}"
        );
        let fits = spec("fits", &container("a", 17 << 10));
        admit(&cfg, ROOT, &fits, &others).unwrap();
        let over = spec("over", &container("a", (17 << 10) + 300));
        assert!(admit(&cfg, ROOT, &over, &others).is_err());
    }

    #[test]
    fn a_user_stays_within_their_quotas() {
        let mut cfg = board(64 << 30);
        cfg.quotas.pods = 2;
        cfg.quotas.memory = 256 << 20;
        cfg.quotas.published_ports = 1;
        let a = spec("a", &container("c", 100));
        let b = spec("b", &container("c", 100));
        let mine = |s| Admitted {
            owner: 1000,
            spec: s,
        };
        let roots = |s| Admitted { owner: 0, spec: s };
        // Root's pods are not the user's.
        admit(&cfg, USER, &a, &[roots(&b), roots(&b), roots(&b)]).unwrap();
        let e = admit(&cfg, USER, &a, &[mine(&b), mine(&b)]).unwrap_err();
        assert!(
            e.0.contains("user 1000 has 2 pods") && e.0.contains("quotas.pods"),
            "{e}"
        );
        let e = admit(&cfg, USER, &spec("big", &container("c", 200)), &[mine(&b)]).unwrap_err();
        assert_eq!(
            e.0,
            "pod big needs 200 MiB of memory, 156 MiB of user 1000's 256 MiB is free (quotas.memory)"
        );
        // Root is bound by the board only.
        admit(
            &cfg,
            ROOT,
            &spec("big", &container("c", 200)),
            &[mine(&b), mine(&b)],
        )
        .unwrap();
        let published = |name| {
            spec(
                name,
                "[[containers]]\nname = \"c\"\nmodule = \"m.wasm\"\nmemory_limit_mib = 1\n\
                 ports = [{ container_port = 80, host_port = 18080 }]\n",
            )
        };
        let p1 = published("p1");
        admit(&cfg, USER, &published("p2"), &[]).unwrap();
        let e = admit(&cfg, USER, &published("p2"), &[mine(&p1)]).unwrap_err();
        assert!(e.0.contains("quotas.published_ports"), "{e}");
    }

    #[test]
    fn grace_and_container_count_are_bounded() {
        let mut cfg = board(64 << 30);
        cfg.limits.max_grace_period = Duration::from_secs(300);
        cfg.quotas.containers = 2;
        let long = spec(
            "g",
            &format!(
                "termination_grace_period = \"23h59m\"\n{}",
                container("c", 1)
            ),
        );
        let p: Vec<String> = check(&long, &cfg, ROOT)
            .iter()
            .map(|p| p.to_string())
            .collect();
        assert_eq!(
            p,
            [
                " pod.termination_grace_period: 23h 59m is longer than this board allows, 5m \
              (limits.max_grace_period)"
            ]
        );
        let three = spec(
            "three",
            &format!(
                "{}{}{}",
                container("a", 1),
                container("b", 1),
                container("c", 1)
            ),
        );
        assert!(
            check(&three, &cfg, ROOT).is_empty(),
            "root: limits.max_containers"
        );
        let p = check(&three, &cfg, USER);
        assert!(
            p[0].to_string()
                .contains("at most 2 are allowed (quotas.containers)"),
            "{p:?}"
        );
    }

    #[test]
    fn sizes_read_well() {
        assert_eq!(size(128 << 30), "128 GiB");
        assert_eq!(size((17 << 30) + (1 << 29) / 2 + (1 << 27)), "17.4 GiB");
        assert_eq!(size(512 << 20), "512 MiB");
        assert_eq!(size(100), "100 B");
    }
}
