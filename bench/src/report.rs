//! The table on stdout and the JSON file.

use std::path::Path;

use anyhow::Result;
use serde::Serialize;

use crate::stats::{Figure, Summary};

#[derive(Debug, Serialize)]
pub(crate) struct Machine {
    pub arch: String,
    pub cores: usize,
    pub kernel: String,
    pub cpu: String,
    pub date: String,
    pub peapod: String,
}

impl Machine {
    pub(crate) fn read() -> Machine {
        let uname = nix::sys::utsname::uname().ok();
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| {
                l.strip_prefix("model name")
                    .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            })
            .unwrap_or_else(|| "unknown".into());
        let date = std::process::Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        Machine {
            arch: std::env::consts::ARCH.into(),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            kernel: uname
                .map(|u| u.release().to_string_lossy().into_owned())
                .unwrap_or_default(),
            cpu,
            date,
            peapod: format!(
                "{} ({} build)",
                env!("CARGO_PKG_VERSION"),
                if cfg!(debug_assertions) {
                    "debug"
                } else {
                    "release"
                }
            ),
        }
    }
}

fn cell(s: &Option<Summary>) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{:.2} / {:.2} / {:.2}", s.min, s.median, s.max),
        Some(s) => format!("{:.2}", s.median),
        None => "-".into(),
    }
}

pub(crate) fn print(m: &Machine, figures: &[Figure]) {
    println!(
        "peapod bench — {} cores {}, kernel {}, {}; peapod {}; {}",
        m.arch, m.cores, m.kernel, m.cpu, m.peapod, m.date
    );
    println!("figures are min / median / max; ratio = peapod median / peer median\n");
    let rows: Vec<[String; 6]> = figures
        .iter()
        .map(|f| {
            [
                format!("{}: {}", f.group, f.name),
                f.unit.to_string(),
                cell(&f.peapod),
                f.peer_name.unwrap_or("").to_string(),
                if f.peer_name.is_some() {
                    cell(&f.peer)
                } else {
                    String::new()
                },
                match (f.ratio(), &f.note) {
                    (Some(r), _) => format!("{r:.2}x"),
                    (None, Some(n)) => n.clone(),
                    (None, None) => String::new(),
                },
            ]
        })
        .collect();
    let head = ["figure", "unit", "peapod", "peer", "peer figure", "ratio"].map(String::from);
    let table: Vec<&[String]> = [&head[..]]
        .into_iter()
        .chain(rows.iter().map(|r| &r[..]))
        .collect();
    print!("{}", peapod::table::render(&table));
}

pub(crate) fn write_json(path: &Path, m: &Machine, figures: &[Figure]) -> Result<()> {
    #[derive(Serialize)]
    struct Out<'a> {
        machine: &'a Machine,
        figures: Vec<serde_json::Value>,
    }
    let figures = figures
        .iter()
        .map(|f| {
            let mut v = serde_json::to_value(f).expect("figure serializes");
            v["ratio"] = serde_json::json!(f.ratio());
            v
        })
        .collect();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(
        path,
        serde_json::to_vec_pretty(&Out {
            machine: m,
            figures,
        })?,
    )?;
    Ok(())
}
