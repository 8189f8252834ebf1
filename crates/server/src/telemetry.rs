//! Structured logging: `LOG_LEVEL` filters, `LOG_FORMAT` chooses JSON or human-readable lines.
//!
//! Lines are formatted where they are logged and written to stdout by a thread of their own,
//! which, woken by the first line of a batch, lets lines gather for a few milliseconds and
//! writes them in one go: a request thread makes no `write` call for its access-log line, and
//! wakes the writer at most once per batch.

use std::io::{BufWriter, Write};
use std::sync::mpsc;
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::EnvFilter;

use crate::config::{Config, LogFormat};

/// Lines that may wait for the writer thread; a logger finding the queue full waits for room,
/// so no line is lost (as it would wait on stdout itself).
const QUEUED_LINES: usize = 16 * 1024;

/// How long the writer lets lines gather after the first one before writing them all.
const GATHER: Duration = Duration::from_millis(5);

/// How long the end of the process waits for the queued lines to be written.
const FLUSH_WAIT: Duration = Duration::from_secs(2);

/// What the writer thread is sent: a line, or a request to flush and say so.
enum Message {
    Line(Vec<u8>),
    Flush(mpsc::Sender<()>),
}

/// Hands formatted lines to the writer thread.
struct Lines {
    queue: mpsc::SyncSender<Message>,
}

/// One event's line, sent when the formatter is done with it.
struct Line<'a> {
    bytes: Vec<u8>,
    queue: &'a mpsc::SyncSender<Message>,
}

impl Write for Line<'_> {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.bytes.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for Line<'_> {
    fn drop(&mut self) {
        if self.bytes.is_empty() {
            return;
        }
        let line = Message::Line(std::mem::take(&mut self.bytes));
        // Without the writer thread (it stopped), the line goes straight to stdout.
        if let Err(mpsc::SendError(Message::Line(bytes))) = self.queue.send(line) {
            let _ = std::io::stdout().write_all(&bytes);
        }
    }
}

impl<'a> MakeWriter<'a> for Lines {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        Line {
            bytes: Vec::with_capacity(256),
            queue: &self.queue,
        }
    }
}

/// Writes what is queued to stdout until the process ends, flushing whenever the queue runs dry.
fn write_lines(queue: mpsc::Receiver<Message>) {
    let mut out = BufWriter::with_capacity(64 * 1024, std::io::stdout());
    let handle = |message: Message, out: &mut BufWriter<std::io::Stdout>| match message {
        Message::Line(bytes) => {
            let _ = out.write_all(&bytes);
        }
        Message::Flush(done) => {
            let _ = out.flush();
            let _ = done.send(());
        }
    };
    while let Ok(message) = queue.recv() {
        handle(message, &mut out);
        // Lines logged meanwhile queue up without waking this thread, and go out together.
        std::thread::sleep(GATHER);
        while let Ok(message) = queue.try_recv() {
            handle(message, &mut out);
        }
        let _ = out.flush();
    }
}

/// Kept by `main` until it returns: dropping it waits (briefly) until every line logged so far
/// is written.
#[must_use]
pub struct Flush(mpsc::SyncSender<Message>);

impl Drop for Flush {
    /// Waits at most [`FLUSH_WAIT`] in all, however stuck stdout is.
    fn drop(&mut self) {
        let deadline = std::time::Instant::now() + FLUSH_WAIT;
        let (done, written) = mpsc::channel();
        let mut request = Message::Flush(done);
        loop {
            match self.0.try_send(request) {
                Ok(()) => break,
                Err(mpsc::TrySendError::Full(again)) if std::time::Instant::now() < deadline => {
                    request = again;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return,
            }
        }
        let _ = written.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now()));
    }
}

/// Installs the global subscriber. Call once, first thing. Fails only when the system refuses
/// the writer thread.
pub fn init(config: &Config) -> std::io::Result<Flush> {
    // The level was validated when the configuration was read.
    let filter = EnvFilter::try_new(&config.log_level).unwrap_or_else(|_| EnvFilter::new("info"));
    let (queue, lines) = mpsc::sync_channel(QUEUED_LINES);
    std::thread::Builder::new()
        .name("log-writer".into())
        .spawn(move || write_lines(lines))?;
    let flush = Flush(queue.clone());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(Lines { queue })
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    match config.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
        LogFormat::Pretty => builder.with_target(false).init(),
    }
    Ok(flush)
}
