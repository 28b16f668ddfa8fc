//! scheduler: cron-style schedules that call the app's endpoints.
//!
//! | variable        | default          | what                                                  |
//! | --------------- | ---------------- | ----------------------------------------------------- |
//! | `SCHEDULE`      | (or the file)    | one job a line: `NAME MIN HOUR DOM MON DOW METHOD PATH`|
//! | `SCHEDULE_FILE` |                  | the same, from a file (a `files` volume)              |
//! | `APP`           | `127.0.0.1:8080` | the app the jobs call                                 |
//! | `MISSED`        | `once`           | after downtime: `once` runs a missed job once at      |
//! |                 |                  | start, `skip` waits for its next time                 |
//! | `JITTER`        | `0s`             | each run waits a random part of this first            |
//! | `STATE_DIR`     | (none)           | where each job's last run is kept (a volume): without |
//! |                 |                  | it nothing is known of runs before a start            |
//! | `ADMIN`         | `127.0.0.1:9903` | `/healthz`, `/readyz`, `/prestop`, and `/status`      |
//!
//! Times are UTC. A line is `backup 0 3 * * * POST /snapshot` (standard 5 fields, ranges, lists,
//! steps, names; 6 with seconds first), or `tick @hourly GET /tick`; `#` starts a comment. A run is one HTTP request,
//! tried 3 times with backoff; 2xx is success. `/status` answers one line per job: name,
//! schedule, last run, its result, next run.

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use croner::Cron;
use croner::parser::{CronParser, Seconds};
use peapod_sdk::http::{self, Request, Response};
use peapod_sdk::net::Listener;
use peapod_sdk::retry::{Backoff, retry};
use peapod_sdk::{Error, Result, config, fs, info, stop, warn};

/// One job of the schedule.
struct Job {
    name: String,
    pattern: String,
    cron: Cron,
    method: String,
    path: String,
    last: Option<(DateTime<Utc>, String)>,
    next: Option<DateTime<Utc>>,
}

/// Reads the schedule: one job a line (see the crate's doc). Every bad line is said, by number.
fn parse_schedule(text: &str, source: &str) -> Result<Vec<Job>> {
    let mut jobs: Vec<Job> = Vec::new();
    let mut problems = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let words: Vec<&str> = line.split_whitespace().collect();
        // 5 fields; 6 with seconds first (an extension, for short periods); or one @macro.
        let fields = match (words.get(1), words.len()) {
            (Some(w), _) if w.starts_with('@') => 1,
            (_, 9) => 6,
            _ => 5,
        };
        if words.len() != 1 + fields + 2 {
            problems.push(format!(
                "line {}: {line:?}: expected NAME, 5 cron fields (or @hourly, @daily, ...) and \
                 METHOD PATH",
                i + 1,
            ));
            continue;
        }
        let pattern = words[1..1 + fields].join(" ");
        let parser = CronParser::builder().seconds(Seconds::Optional).build();
        let cron = match parser.parse(&pattern) {
            Ok(c) => c,
            Err(e) => {
                problems.push(format!("line {}: {pattern:?}: {e}", i + 1));
                continue;
            }
        };
        let (name, method, path) = (words[0], words[1 + fields], words[2 + fields]);
        if !path.starts_with('/') {
            problems.push(format!("line {}: {path:?}: a path starts with /", i + 1));
            continue;
        }
        if jobs.iter().any(|j| j.name == name) {
            problems.push(format!("line {}: job {name:?} twice", i + 1));
            continue;
        }
        jobs.push(Job {
            name: name.to_string(),
            pattern,
            cron,
            method: method.to_ascii_uppercase(),
            path: path.to_string(),
            last: None,
            next: None,
        });
    }
    if problems.is_empty() && jobs.is_empty() {
        problems.push("no jobs".into());
    }
    match problems.is_empty() {
        true => Ok(jobs),
        false => Err(Error::Config {
            var: source.to_string(),
            why: problems.join("; "),
        }),
    }
}

struct Settings {
    app: String,
    once: bool,
    jitter: Duration,
    state: Option<PathBuf>,
    admin: String,
}

fn main() {
    peapod_sdk::run(async {
        let (text, source) = match std::env::var("SCHEDULE_FILE") {
            Ok(f) if !f.is_empty() => (
                std::fs::read_to_string(&f).map_err(|source| Error::File {
                    path: f.clone().into(),
                    source,
                })?,
                f,
            ),
            _ => (config::env("SCHEDULE")?, "SCHEDULE".to_string()),
        };
        let jobs = parse_schedule(&text, &source)?;
        let settings = Settings {
            app: config::env_or("APP", "127.0.0.1:8080"),
            once: match config::env_or("MISSED", "once").as_str() {
                "once" => true,
                "skip" => false,
                other => {
                    return Err(Error::Config {
                        var: "MISSED".into(),
                        why: format!("{other:?}: use once or skip"),
                    });
                }
            },
            jitter: config::duration_or("JITTER", Duration::ZERO)?,
            state: std::env::var("STATE_DIR")
                .ok()
                .filter(|s| !s.is_empty())
                .map(PathBuf::from),
            admin: config::env_or("ADMIN", "127.0.0.1:9903"),
        };
        if let Some(dir) = &settings.state {
            fs::sweep_temp(dir);
        }
        let jobs = Rc::new(RefCell::new(jobs));
        serve_status(&settings.admin, jobs.clone()).await?;
        info!("scheduler started"; jobs = jobs.borrow().len(), app = settings.app, missed = if settings.once { "once" } else { "skip" });
        catch_up(&settings, &jobs).await;
        while !stop::requested() {
            let now = Utc::now();
            let mut due = Vec::new();
            let mut earliest: Option<DateTime<Utc>> = None;
            for (i, job) in jobs.borrow_mut().iter_mut().enumerate() {
                let next = *job.next.get_or_insert_with(|| {
                    job.cron
                        .find_next_occurrence(&now, false)
                        .unwrap_or(now + chrono::Days::new(36500))
                });
                if next <= now {
                    due.push(i);
                } else {
                    earliest = Some(earliest.map_or(next, |e| e.min(next)));
                }
            }
            if !due.is_empty() {
                for i in due {
                    run_job(&settings, &jobs, i, "scheduled").await;
                    let mut jobs = jobs.borrow_mut();
                    jobs[i].next = jobs[i].cron.find_next_occurrence(&Utc::now(), false).ok();
                }
                continue;
            }
            // At most a minute at a time: a wall clock that jumps (NTP at boot) is followed.
            let wait = earliest
                .and_then(|e| (e - Utc::now()).to_std().ok())
                .unwrap_or(Duration::ZERO)
                .min(Duration::from_secs(60));
            stop::sleep(wait).await;
        }
        info!("scheduler stopping");
        Ok(())
    })
}

/// After downtime: a job whose last kept run is before its latest due time missed a run; it
/// runs once now (`MISSED=once`) or waits for its next time (`skip`).
async fn catch_up(settings: &Settings, jobs: &Rc<RefCell<Vec<Job>>>) {
    let Some(dir) = &settings.state else {
        return;
    };
    let now = Utc::now();
    let n = jobs.borrow().len();
    for i in 0..n {
        let missed = {
            let mut jobs = jobs.borrow_mut();
            let job = &mut jobs[i];
            let last = fs::read_if_exists(dir.join(format!("{}.last", job.name)))
                .ok()
                .flatten()
                .and_then(|b| String::from_utf8(b).ok())
                .and_then(|t| {
                    let (when, result) = t.trim().split_once(' ')?;
                    Some((
                        DateTime::parse_from_rfc3339(when).ok()?.with_timezone(&Utc),
                        result.to_string(),
                    ))
                });
            job.last = last.clone();
            match (last, job.cron.find_previous_occurrence(&now, false)) {
                (Some((when, _)), Ok(due)) if when < due => Some(due),
                _ => None,
            }
        };
        if let Some(due) = missed {
            let name = jobs.borrow()[i].name.clone();
            if settings.once {
                info!("missed run, running it once now"; job = name, due = due.to_rfc3339());
                run_job(settings, jobs, i, "missed").await;
            } else {
                info!("missed run skipped"; job = name, due = due.to_rfc3339());
            }
        }
    }
}

/// Runs job `i` once (after its jitter): its request, tried 3 times; the result is kept.
async fn run_job(settings: &Settings, jobs: &Rc<RefCell<Vec<Job>>>, i: usize, why: &str) {
    if !settings.jitter.is_zero() {
        let mut b = [0u8; 4];
        peapod_sdk::rand(&mut b);
        let part = settings
            .jitter
            .mul_f64(u32::from_le_bytes(b) as f64 / u32::MAX as f64);
        stop::sleep(part).await;
    }
    let (name, method, path) = {
        let jobs = jobs.borrow();
        (
            jobs[i].name.clone(),
            jobs[i].method.clone(),
            jobs[i].path.clone(),
        )
    };
    let started = Utc::now();
    let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(5));
    let req = Request::new(&method, &path);
    let answer = retry(3, &mut backoff, |_| async {
        http::send(&settings.app, &req).await?.success()
    })
    .await;
    let result = match &answer {
        Ok(r) => format!("{}", r.status),
        Err(e) => format!("failed:{}", e.to_string().replace(' ', "_")),
    };
    match &answer {
        Ok(r) => {
            info!("ran"; job = name, why = why, method = method, path = path, status = r.status)
        }
        Err(e) => warn!("run failed: {e}"; job = name, why = why, method = method, path = path),
    }
    jobs.borrow_mut()[i].last = Some((started, result.clone()));
    if let Some(dir) = &settings.state {
        let line = format!("{} {result}\n", started.to_rfc3339());
        if let Err(e) = fs::write_atomic(dir.join(format!("{name}.last")), line.as_bytes()) {
            warn!("cannot keep the last run: {e}"; job = name);
        }
    }
}

/// `/status` beside peapod's endpoints on `addr`.
async fn serve_status(addr: &str, jobs: Rc<RefCell<Vec<Job>>>) -> Result<()> {
    let listener = Listener::bind(addr).await?;
    peapod_sdk::spawn(async move {
        let _ = http::serve(listener, move |req| {
            let jobs = jobs.clone();
            async move {
                if let Some(r) = http::health(&req) {
                    return r;
                }
                if req.path() != "/status" {
                    return Response::text(404, "not found\n");
                }
                let mut out = String::new();
                for j in jobs.borrow().iter() {
                    let (last, result) = match &j.last {
                        Some((t, r)) => (t.to_rfc3339(), r.clone()),
                        None => ("-".into(), "-".into()),
                    };
                    let next = j.next.map_or("-".into(), |n| n.to_rfc3339());
                    out.push_str(&format!(
                        "{} schedule=\"{}\" last={last} result={result} next={next}\n",
                        j.name, j.pattern
                    ));
                }
                Response::text(200, out)
            }
        })
        .await;
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_parse_and_bad_lines_are_named() {
        let jobs = parse_schedule(
            "# nightly\nbackup 0 3 * * * POST /snapshot\ntick @hourly get /tick\n",
            "SCHEDULE",
        )
        .unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!(
            (jobs[1].method.as_str(), jobs[1].path.as_str()),
            ("GET", "/tick")
        );
        let e = parse_schedule(
            "a 61 * * * * GET /x\nb * * * GET /y\nc * * * * * GET y\n",
            "F",
        )
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.starts_with("F: line 1:") && e.contains("line 2:") && e.contains("line 3:"),
            "{e}"
        );
    }
}
