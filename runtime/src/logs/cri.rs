//! Container log files in the CRI format that kubelet and crictl use:
//! `<RFC3339Nano> stdout|stderr F|P <text>`, one line per record, `P` when the record is a piece
//! of a longer line that goes on in the next record. One file per container,
//! `<logs_dir>/<pod>/<container>.log`, rotated by size: `.log` → `.log.1` → … → `.log.<max_files-1>`,
//! the oldest dropped. The files outlive the container's runs (and the daemon), so `peapod logs`
//! works for exited containers; a re-created pod's logs move to `<logs_dir>/<pod>.previous/`
//! (`peapod logs --previous`); deleting the pod removes both.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use super::Stream;

/// Where log files go and how big they may grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogSettings {
    pub dir: PathBuf,
    /// Rotate a file once it would grow past this many bytes (0: never rotate).
    pub max_size: u64,
    /// Files kept per container, the live one included (at least 1).
    pub max_files: u32,
}

impl LogSettings {
    pub fn pod_dir(&self, pod: &str) -> PathBuf {
        self.dir.join(pod)
    }

    pub fn path(&self, pod: &str, container: &str) -> PathBuf {
        self.pod_dir(pod).join(format!("{container}.log"))
    }

    /// Opens (appending) the log of one container.
    pub fn open(&self, pod: &str, container: &str) -> io::Result<CriFile> {
        let path = self.path(pod, container);
        std::fs::create_dir_all(self.pod_dir(pod))?;
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        Ok(CriFile {
            path,
            max_size: self.max_size,
            max_files: self.max_files.max(1),
            inner: Mutex::new((file, size)),
        })
    }

    /// The containers that have a log file in `dir` (a pod's, or its previous sandbox's), by
    /// name, sorted.
    pub fn containers_in(dir: &Path) -> io::Result<Vec<String>> {
        let mut names: Vec<String> = (std::fs::read_dir(dir)?.flatten())
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                Some(name.strip_suffix(".log")?.to_string())
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Where the logs of the pod's previous sandbox are kept (`<pod>.previous`: a pod name has
    /// no dot, so it is never a pod's own directory).
    pub fn previous_dir(&self, pod: &str) -> PathBuf {
        self.dir.join(format!("{pod}.previous"))
    }

    pub fn previous_path(&self, pod: &str, container: &str) -> PathBuf {
        self.previous_dir(pod).join(format!("{container}.log"))
    }

    /// The pod is being re-created: its logs become the previous sandbox's (replacing older
    /// ones), and the new sandbox starts new files.
    pub fn retire_pod(&self, pod: &str) -> io::Result<()> {
        remove_dir(&self.previous_dir(pod))?;
        match std::fs::rename(self.pod_dir(pod), self.previous_dir(pod)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Removes every log of a pod, its previous sandbox's too.
    pub fn remove_pod(&self, pod: &str) -> io::Result<()> {
        remove_dir(&self.pod_dir(pod))?;
        remove_dir(&self.previous_dir(pod))
    }

    /// Removes the logs of every pod not in `keep` (left by a pod deleted while the daemon was
    /// being killed); returns those pods.
    pub fn collect_orphans(&self, keep: &std::collections::BTreeSet<String>) -> Vec<String> {
        let Ok(dir) = std::fs::read_dir(&self.dir) else {
            return Vec::new();
        };
        let mut removed = Vec::new();
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let pod = name.strip_suffix(".previous").unwrap_or(&name).to_string();
            if !keep.contains(&pod) && e.file_type().is_ok_and(|t| t.is_dir()) {
                match remove_dir(&e.path()) {
                    Ok(()) => removed.push(name),
                    Err(err) => tracing::warn!("{}: {err}", e.path().display()),
                }
            }
        }
        removed
    }
}

fn remove_dir(p: &Path) -> io::Result<()> {
    match std::fs::remove_dir_all(p) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

fn open_append(path: &Path) -> io::Result<File> {
    File::options().create(true).append(true).open(path)
}

/// One container's log file, shared by every run of the container.
#[derive(Debug)]
pub struct CriFile {
    path: PathBuf,
    max_size: u64,
    max_files: u32,
    inner: Mutex<(File, u64)>,
}

/// One record formatted for the file, newline included.
pub fn format_record(at: SystemTime, stream: Stream, text: &str, partial: bool) -> String {
    format!(
        "{} {} {} {text}\n",
        humantime::format_rfc3339_nanos(at),
        stream.as_str(),
        if partial { "P" } else { "F" }
    )
}

impl CriFile {
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends one record, rotating first if it would not fit.
    pub fn write(&self, stream: Stream, text: &str, partial: bool) -> io::Result<()> {
        self.append(format_record(SystemTime::now(), stream, text, partial))
    }

    /// Appends a run mark (see [`RUN_MARK_TAG`]) saying `text`.
    pub fn write_mark(&self, text: &str) -> io::Result<()> {
        let at = humantime::format_rfc3339_nanos(SystemTime::now());
        self.append(format!("{at} stdout {RUN_MARK_TAG} {text}\n"))
    }

    fn append(&self, record: String) -> io::Result<()> {
        let mut guard = self.inner.lock().expect("log lock");
        let (file, size) = &mut *guard;
        if self.max_size > 0 && *size > 0 && *size + record.len() as u64 > self.max_size {
            self.rotate()?;
            *file = open_append(&self.path)?;
            *size = 0;
        }
        file.write_all(record.as_bytes())?;
        *size += record.len() as u64;
        Ok(())
    }

    fn rotate(&self) -> io::Result<()> {
        let n = self.max_files;
        if n <= 1 {
            return std::fs::remove_file(&self.path);
        }
        for i in (1..n - 1).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))
    }
}

/// `<path>.<i>`: the i-th older file.
pub fn rotated(path: &Path, i: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{i}"));
    PathBuf::from(s)
}

/// The tag of a run mark: a record peapod writes (not the container) where a restart in place
/// begins a new run, so a person sees where one run ends and `logs -p` finds the previous run.
/// `F` first, as CRI readers (the kubelet's among them) take the first of `:`-separated tags.
pub const RUN_MARK_TAG: &str = "F:run";

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub text: &'a str,
    /// A run mark (see [`RUN_MARK_TAG`]).
    pub mark: bool,
}

/// Parses a record line (without its newline); `None` if it is not in the CRI format.
pub fn parse(line: &str) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "F" | "P" | RUN_MARK_TAG) {
        return None;
    }
    Some(Record {
        time,
        stream,
        partial: tag == "P",
        text,
        mark: tag == RUN_MARK_TAG,
    })
}

/// The records of a container's previous run in its log `path` (and the rotated files before
/// it, of at most `max_files`): from the run mark before the last one (or the oldest record,
/// when the previous run is the first) to the last mark; `None` when the log holds one run only.
pub fn previous_run(path: &Path, max_files: u32) -> io::Result<Option<Vec<String>>> {
    let lines = all_lines(path, max_files)?;
    let marks: Vec<usize> = (lines.iter().enumerate())
        .filter(|(_, l)| parse(l).is_some_and(|r| r.mark))
        .map(|(i, _)| i)
        .collect();
    Ok(match marks.as_slice() {
        [] => None,
        [.., last] => {
            let from = marks.len().checked_sub(2).map_or(0, |i| marks[i]);
            Some(lines[from..*last].to_vec())
        }
    })
}

/// Every record of a container's log `path` and its rotated files (of at most `max_files`),
/// oldest first, read whole.
fn all_lines(path: &Path, max_files: u32) -> io::Result<Vec<String>> {
    let mut lines = Vec::new();
    let files = (1..max_files).rev().map(|i| rotated(path, i));
    for f in files.chain([path.to_path_buf()]) {
        match std::fs::read_to_string(&f) {
            Ok(text) => lines.extend(text.lines().map(str::to_string)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    Ok(lines)
}

/// The records of a container's current run (after its last run mark; every record when it
/// has not restarted), read whole as [`previous_run`] reads: what the kubelet's
/// `containerLogs` shows.
pub fn current_run(path: &Path, max_files: u32) -> io::Result<Vec<String>> {
    let mut lines = all_lines(path, max_files)?;
    let from = (lines.iter())
        .rposition(|l| parse(l).is_some_and(|r| r.mark))
        .map_or(0, |i| i + 1);
    Ok(lines.split_off(from))
}

/// A piece of one log file to send: its open file and a byte range.
#[derive(Debug)]
pub struct Span {
    pub file: File,
    pub start: u64,
    pub end: u64,
}

/// Chunk size for reading log files (memory per reader stays about this).
pub const CHUNK: usize = 64 * 1024;

/// The last `n` records of a container (every record when `n` is `None`), oldest first, across
/// its rotated files, as spans of the files to stream from disk: finding them reads backwards
/// in [`CHUNK`]s, so memory stays bounded whatever the files' size. The files are opened now
/// and their lengths taken now: a rotation while the spans are sent does not disturb them.
pub fn tail_spans(path: &Path, n: Option<usize>) -> io::Result<Vec<Span>> {
    let mut files = vec![path.to_path_buf()];
    let mut i = 1;
    while rotated(path, i).exists() {
        files.push(rotated(path, i));
        i += 1;
    }
    let mut spans = Vec::new();
    let mut wanted = n;
    for f in files {
        if wanted == Some(0) {
            break;
        }
        let mut file = match File::open(&f) {
            Ok(file) => file,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let end = file.metadata()?.len();
        let start = match wanted {
            None => 0,
            Some(k) => {
                let (start, lines) = start_of_last_lines(&mut file, end, k)?;
                wanted = Some(k - lines);
                start
            }
        };
        spans.push(Span { file, start, end });
    }
    spans.reverse();
    Ok(spans)
}

/// Where the last `n` lines of the first `len` bytes of `file` begin, and how many lines that
/// is (fewer than `n` when the file holds fewer: then the offset is 0).
fn start_of_last_lines(file: &mut File, len: u64, n: usize) -> io::Result<(u64, usize)> {
    if len == 0 || n == 0 {
        return Ok((len, 0));
    }
    let mut buf = vec![0u8; CHUNK];
    // The newline that ends the last line does not start a line.
    let mut pos = len;
    let mut skip_last = true;
    let mut newlines = 0;
    while pos > 0 {
        let from = pos.saturating_sub(CHUNK as u64);
        let chunk = &mut buf[..(pos - from) as usize];
        file.seek(SeekFrom::Start(from))?;
        file.read_exact(chunk)?;
        for (i, b) in chunk.iter().enumerate().rev() {
            if *b != b'\n' {
                continue;
            }
            if skip_last && from + i as u64 == len - 1 {
                skip_last = false;
                continue;
            }
            newlines += 1;
            if newlines == n {
                return Ok((from + i as u64 + 1, n));
            }
        }
        pos = from;
    }
    Ok((0, newlines + 1))
}

/// The last `n` records as lines, read whole (for tests and small files).
pub fn tail(path: &Path, n: Option<usize>) -> io::Result<Vec<String>> {
    let mut text = Vec::new();
    for mut s in tail_spans(path, n)? {
        s.file.seek(SeekFrom::Start(s.start))?;
        (&mut s.file).take(s.end - s.start).read_to_end(&mut text)?;
    }
    Ok(String::from_utf8_lossy(&text)
        .lines()
        .map(str::to_string)
        .collect())
}

/// Reads what is appended to a log file from a position on, across rotations.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<File>,
    inode: u64,
    pending: Vec<u8>,
}

impl Follower {
    /// Follows `path` from its current end.
    pub fn from_end(path: &Path) -> Self {
        let mut f = Follower {
            path: path.to_path_buf(),
            file: None,
            inode: 0,
            pending: Vec::new(),
        };
        if let Ok(mut file) = File::open(path) {
            f.inode = file.metadata().map(|m| m.ino()).unwrap_or(0);
            let _ = file.seek(SeekFrom::End(0));
            f.file = Some(file);
        }
        f
    }

    /// Complete lines appended since the last call. After a rotation, what the old file got last
    /// is read before the new file from its start.
    pub fn poll(&mut self) -> io::Result<Vec<String>> {
        let mut buf = Vec::new();
        if let Some(file) = &mut self.file {
            file.read_to_end(&mut buf)?;
        }
        let now = std::fs::metadata(&self.path).ok().map(|m| m.ino());
        if now.is_some()
            && now != Some(self.inode)
            && let Ok(mut file) = File::open(&self.path)
        {
            self.inode = file.metadata()?.ino();
            file.read_to_end(&mut buf)?;
            self.file = Some(file);
        }
        self.pending.extend_from_slice(&buf);
        let mut lines = Vec::new();
        while let Some(nl) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=nl).collect();
            lines.push(String::from_utf8_lossy(&line[..nl]).into_owned());
        }
        Ok(lines)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(dir: &Path, max_size: u64, max_files: u32) -> LogSettings {
        LogSettings {
            dir: dir.to_path_buf(),
            max_size,
            max_files,
        }
    }

    #[test]
    fn records_are_cri_lines() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 0, 3);
        let f = s.open("p", "c").unwrap();
        f.write(Stream::Stdout, "hello world", false).unwrap();
        f.write(Stream::Stderr, "part", true).unwrap();
        let text = std::fs::read_to_string(s.path("p", "c")).unwrap();
        let lines: Vec<_> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        let r = parse(lines[0]).unwrap();
        assert_eq!(
            (r.stream, r.partial, r.text),
            ("stdout", false, "hello world")
        );
        let r = parse(lines[1]).unwrap();
        assert_eq!((r.stream, r.partial, r.text), ("stderr", true, "part"));
        // RFC 3339 with nanoseconds, in UTC.
        assert_eq!(
            r.time.len(),
            "2026-11-25T10:00:00.123456789Z".len(),
            "{}",
            r.time
        );
        assert!(r.time.ends_with('Z') && humantime::parse_rfc3339(r.time).is_ok());
        assert_eq!(parse("garbage"), None);
    }

    #[test]
    fn runs_are_told_apart_across_rotated_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 150, 5);
        let f = s.open("p", "c").unwrap();
        let path = s.path("p", "c");
        f.write(Stream::Stdout, "first run", false).unwrap();
        assert_eq!(previous_run(&path, 5).unwrap(), None, "one run only");
        let text = |lines: Vec<String>| -> Vec<String> {
            lines
                .iter()
                .filter_map(|l| parse(l))
                .filter(|r| !r.mark)
                .map(|r| r.text.to_string())
                .collect()
        };
        assert_eq!(text(current_run(&path, 5).unwrap()), ["first run"]);
        f.write_mark("run 2").unwrap();
        for i in 0..4 {
            f.write(Stream::Stdout, &format!("second run {i}"), false)
                .unwrap();
        }
        assert!(rotated(&path, 1).exists(), "the second run spans files");
        let current = text(current_run(&path, 5).unwrap());
        assert_eq!(
            current,
            (0..4)
                .map(|i| format!("second run {i}"))
                .collect::<Vec<_>>()
        );
        assert_eq!(
            text(previous_run(&path, 5).unwrap().unwrap()),
            ["first run"]
        );
    }

    #[test]
    fn rotates_by_size_and_keeps_max_files() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 200, 3);
        let f = s.open("p", "c").unwrap();
        for i in 0..40 {
            f.write(Stream::Stdout, &format!("line {i:03}"), false)
                .unwrap();
        }
        let path = s.path("p", "c");
        for p in [&path, &rotated(&path, 1), &rotated(&path, 2)] {
            let len = std::fs::metadata(p).unwrap().len();
            assert!(len > 0 && len <= 200, "{}: {len}", p.display());
        }
        assert!(!rotated(&path, 3).exists(), "only 3 files are kept");
        // The newest records survive, in order, across the files.
        let all = tail(&path, None).unwrap();
        let texts: Vec<_> = all.iter().map(|l| parse(l).unwrap().text).collect();
        assert_eq!(texts.last(), Some(&"line 039"));
        let mut sorted = texts.clone();
        sorted.sort();
        assert_eq!(texts, sorted);
        // Every count, across file boundaries, matches the end of the whole.
        for k in 0..=all.len() + 2 {
            let got = tail(&path, Some(k)).unwrap();
            assert_eq!(got, all[all.len().saturating_sub(k)..].to_vec(), "tail {k}");
        }
    }

    #[test]
    fn last_lines_of_files_larger_than_a_chunk() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("big.log");
        let lines: Vec<String> = (0..20_000)
            .map(|i| format!("{i:08} {}", "x".repeat(i % 13)))
            .collect();
        std::fs::write(&p, lines.join("\n") + "\n").unwrap();
        for k in [1, 2, 5000, 19_999, 20_000, 25_000] {
            let got = tail(&p, Some(k)).unwrap();
            assert_eq!(
                got,
                lines[20_000usize.saturating_sub(k)..].to_vec(),
                "tail {k}"
            );
        }
        // A last line without its newline still counts as a line.
        std::fs::write(&p, "a\nb\nc").unwrap();
        assert_eq!(tail(&p, Some(2)).unwrap(), ["b", "c"]);
    }

    #[test]
    fn follower_sees_appends_across_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let s = settings(dir.path(), 120, 2);
        let f = s.open("p", "c").unwrap();
        f.write(Stream::Stdout, "before", false).unwrap();
        let mut follow = Follower::from_end(&s.path("p", "c"));
        assert!(follow.poll().unwrap().is_empty());
        let mut seen = Vec::new();
        for i in 0..10 {
            f.write(Stream::Stdout, &format!("n{i}"), false).unwrap();
            seen.extend(follow.poll().unwrap());
        }
        let texts: Vec<_> = seen.iter().map(|l| parse(l).unwrap().text).collect();
        let want: Vec<String> = (0..10).map(|i| format!("n{i}")).collect();
        assert_eq!(texts, want);
    }
}
