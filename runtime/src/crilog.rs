//! Container log files in the CRI format that kubelet and crictl use:
//! `<RFC3339Nano> stdout|stderr F|P <text>`, one line per record, `P` when the record is a piece
//! of a longer line that goes on in the next record. One file per container,
//! `<logs_dir>/<pod>/<container>.log`, rotated by size: `.log` → `.log.1` → … → `.log.<max_files-1>`,
//! the oldest dropped. The files outlive the container's runs (and the daemon), so `peapod logs`
//! works for exited containers; deleting the pod removes them.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use crate::logs::Stream;

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

    /// Removes every log of a pod.
    pub fn remove_pod(&self, pod: &str) -> io::Result<()> {
        match std::fs::remove_dir_all(self.pod_dir(pod)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
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
        let record = format_record(SystemTime::now(), stream, text, partial);
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

/// One parsed record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub time: &'a str,
    pub stream: &'a str,
    pub partial: bool,
    pub text: &'a str,
}

/// Parses a record line (without its newline); `None` if it is not in the CRI format.
pub fn parse(line: &str) -> Option<Record<'_>> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    if !matches!(stream, "stdout" | "stderr") || !matches!(tag, "F" | "P") {
        return None;
    }
    Some(Record {
        time,
        stream,
        partial: tag == "P",
        text,
    })
}

/// The last `n` records of a container (every record when `n` is `None`), oldest first, across
/// its rotated files.
pub fn tail(path: &Path, n: Option<usize>) -> io::Result<Vec<String>> {
    let mut files = vec![path.to_path_buf()];
    let mut i = 1;
    while rotated(path, i).exists() {
        files.push(rotated(path, i));
        i += 1;
    }
    let mut out: Vec<String> = Vec::new();
    for f in files {
        if n.is_some_and(|n| out.len() >= n) {
            break;
        }
        let lines = match File::open(&f) {
            Ok(file) => BufReader::new(file)
                .lines()
                .collect::<io::Result<Vec<_>>>()?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let take = n.map_or(lines.len(), |n| (n - out.len()).min(lines.len()));
        let mut older: Vec<String> = lines[lines.len() - take..].to_vec();
        older.append(&mut out);
        out = older;
    }
    Ok(out)
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
        let last5: Vec<_> = tail(&path, Some(5)).unwrap();
        assert_eq!(last5, all[all.len() - 5..].to_vec());
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
