//! Container output: a module's stdout and stderr, cut into lines. Each line goes to the
//! container's log file in the CRI format when the pod has one (the daemon, see [`cri`]), to a
//! [`LogSink`] (`peapod run`), or else to the process log with the pod and container names
//! (`demo/app: hello`).

pub mod cri;

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};

use self::cri::CriFile;

/// A line longer than this is logged in pieces.
pub const MAX_LINE: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    pub fn as_str(self) -> &'static str {
        match self {
            Stream::Stdout => "stdout",
            Stream::Stderr => "stderr",
        }
    }
}

/// Receives every line of every container of a pod: `(pod/container, stream, line)`. Besides a
/// log file, or instead of the process log when there is none: `peapod run` prints guests' output
/// with it, benchmarks read results from it.
pub type LogSink = Arc<dyn Fn(&str, Stream, &str) + Send + Sync>;

/// Where one container's output goes.
#[derive(Clone)]
pub struct ContainerLog {
    /// `pod/container`
    id: Arc<str>,
    sink: Option<LogSink>,
    file: Option<Arc<CriFile>>,
    /// Lines the log file refused since the last warning, and when that was: a full disk turns
    /// into one warning per [`WARN_EVERY`], not one per line.
    lost: Arc<std::sync::Mutex<(u64, Option<std::time::Instant>)>>,
}

/// At most one "log file" warning per container this often.
pub const WARN_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

impl std::fmt::Debug for ContainerLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContainerLog")
            .field("id", &self.id)
            .finish()
    }
}

impl ContainerLog {
    pub fn new(pod: &str, container: &str, sink: Option<LogSink>) -> Self {
        ContainerLog {
            id: format!("{pod}/{container}").into(),
            sink,
            file: None,
            lost: Default::default(),
        }
    }

    /// Lines go to `file` instead of the process log.
    pub fn with_file(mut self, file: Arc<CriFile>) -> Self {
        self.file = Some(file);
        self
    }

    /// `pod/container`, for messages about this container.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Records one line (without its newline); `partial` when the line goes on in the next call
    /// (a line longer than [`MAX_LINE`], or output cut off by the end of the run).
    pub fn line(&self, stream: Stream, line: &str, partial: bool) {
        if let Some(sink) = &self.sink {
            sink(&self.id, stream, line);
        }
        if let Some(file) = &self.file {
            if let Err(e) = file.write(stream, line, partial) {
                self.lost(&e);
            }
            return;
        }
        if self.sink.is_some() {
            return;
        }
        match stream {
            Stream::Stdout => tracing::info!(target: "peapod::container", "{}: {line}", self.id),
            Stream::Stderr => {
                tracing::info!(target: "peapod::container", "{} (stderr): {line}", self.id)
            }
        }
    }

    /// Marks in the log file (if there is one) that a new run begins here: `text` says which
    /// and why (see [`cri::RUN_MARK_TAG`]).
    pub fn mark_run(&self, text: &str) {
        if let Some(file) = &self.file
            && let Err(e) = file.write_mark(text)
        {
            self.lost(&e);
        }
    }

    /// A line the log file refused: counted, and said at most once per [`WARN_EVERY`].
    fn lost(&self, e: &io::Error) {
        let mut lost = self.lost.lock().unwrap_or_else(|p| p.into_inner());
        lost.0 += 1;
        if lost.1.is_none_or(|t| t.elapsed() >= WARN_EVERY) {
            tracing::warn!(
                "{}: log file: {e} ({} lines lost since the last warning; the next warning in \
                 {}s at the earliest)",
                self.id,
                lost.0,
                WARN_EVERY.as_secs()
            );
            *lost = (0, Some(std::time::Instant::now()));
        }
    }

    /// A WASI output stream feeding this log.
    pub fn stream(&self, stream: Stream) -> LogStream {
        LogStream {
            log: self.clone(),
            stream,
        }
    }
}

/// The [`StdoutStream`] handed to WASI.
pub struct LogStream {
    log: ContainerLog,
    stream: Stream,
}

impl IsTerminal for LogStream {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogStream {
    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(LineWriter {
            log: self.log.clone(),
            stream: self.stream,
            buf: Vec::new(),
        })
    }
}

/// Buffers bytes until a newline; a partial last line is logged when the writer is dropped.
struct LineWriter {
    log: ContainerLog,
    stream: Stream,
    buf: Vec<u8>,
}

impl LineWriter {
    fn emit(&mut self, upto: usize) {
        let line: Vec<u8> = self.buf.drain(..upto).collect();
        let text = String::from_utf8_lossy(&line);
        let (text, partial) = match text.strip_suffix('\n') {
            Some(t) => (t, false),
            None => (&*text, true),
        };
        self.log.line(self.stream, text, partial);
    }

    fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        while let Some(nl) = self.buf.iter().position(|b| *b == b'\n') {
            self.emit(nl + 1);
        }
        while self.buf.len() >= MAX_LINE {
            self.emit(MAX_LINE);
        }
    }
}

impl AsyncWrite for LineWriter {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            let n = self.buf.len();
            self.emit(n);
        }
    }
}
