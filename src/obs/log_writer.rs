//! The access-log writer thread and the per-shard queues that feed it.
//!
//! Owns: one bounded queue per shard (`std::sync::mpsc::sync_channel`), the shard-side
//! `AccessLogSender` (never blocks: a full queue drops the record and counts it in a
//! shard-local `Cell`), and the writer thread that formats records, writes them in large
//! batches, flushes when its queues run dry (or at least every 100 ms under load) and
//! reopens the file when the reopen flag (SIGUSR1) is set, for logrotate. An empty path
//! (`accessLog: {path: ""}`) means no access log: no thread, and senders that discard.
//! Must not: block a shard, or share a counter between shards on the data path.
//!
//! Cost per record, measured with callgrind: the shard's `try_send` is a few atomics and
//! never a syscall or a wakeup (the writer is not waiting on the channel: it polls every
//! 10 ms when idle); the writer renders into one batch buffer and writes it with one
//! `write` per pass, so a syscall carries hundreds of lines under load.

use std::cell::Cell;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::obs::access_log::AccessRecord;
use crate::obs::log_format::{LogFormat, StartTimeCache};

/// Stat name of the records shards dropped because their queue was full.
pub const STAT_DROPPED: &str = "access_log.dropped";
/// Stat names of the writer's own counters (see `AccessLogWriter::counters`).
pub const STAT_WRITTEN: &str = "access_log.written";
pub const STAT_WRITE_FAILED: &str = "access_log.write_failed";
pub const STAT_REOPEN_FAILED: &str = "access_log.reopen_failed";

/// How long the writer sleeps when every queue is empty. Shards never wake it (that
/// would cost them a syscall per record), so this bounds how late a line appears.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// Under continuous load, flush at least this often.
const MAX_FLUSH_DELAY: Duration = Duration::from_millis(100);
/// Write the batch once it reaches this size, whatever the queues hold.
const BATCH_BYTES: usize = 64 * 1024;

/// A shard's end of its queue. `Send` (moved into the shard's thread), neither `Clone`
/// nor `Sync`: one per shard, so its drop counter is a plain `Cell`.
pub struct AccessLogSender {
    /// None when the access log is off (`accessLog.path: ""`).
    tx: Option<SyncSender<AccessRecord>>,
    dropped: Cell<u64>,
}

impl AccessLogSender {
    /// A sender for a gateway without an access log: `send` discards, counting nothing.
    pub fn disabled() -> Self {
        AccessLogSender {
            tx: None,
            dropped: Cell::new(0),
        }
    }

    /// Whether records sent here are written somewhere (false with `accessLog.path: ""`).
    pub fn is_enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `rec` for the writer without blocking. Returns false, and counts the drop,
    /// when the queue is full or the writer has stopped; true when queued, or discarded
    /// because the access log is off (nothing was lost that anyone asked for).
    pub fn send(&self, rec: AccessRecord) -> bool {
        let Some(tx) = &self.tx else {
            return true;
        };
        match tx.try_send(rec) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.set(self.dropped.get() + 1);
                false
            }
        }
    }

    /// Records this shard dropped so far (publish as `access_log.dropped`).
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

/// The writer thread's ends of the shards' queues, before a writer consumes them.
pub struct AccessLogQueues {
    receivers: Vec<Receiver<AccessRecord>>,
}

impl AccessLogQueues {
    /// One queue of `queue_len` records per shard.
    pub fn new(shards: usize, queue_len: usize) -> (Self, Vec<AccessLogSender>) {
        let (senders, receivers) = (0..shards)
            .map(|_| {
                let (tx, rx) = sync_channel(queue_len);
                let sender = AccessLogSender {
                    tx: Some(tx),
                    dropped: Cell::new(0),
                };
                (sender, rx)
            })
            .unzip();
        (AccessLogQueues { receivers }, senders)
    }
}

/// The writer's own counters; written by the writer thread only, read by the admin.
#[derive(Default)]
pub struct WriterCounters {
    pub written: AtomicU64,
    pub write_failed: AtomicU64,
    pub reopen_failed: AtomicU64,
    /// Completed reopens (successful or not): lets a caller know a request was served.
    pub reopens: AtomicU64,
}

/// Handle on the writer thread: the reopen flag, its counters, and shutdown.
pub struct AccessLogWriter {
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    counters: Arc<WriterCounters>,
    thread: Option<JoinHandle<()>>,
}

/// The access log as the bootstrap's `accessLog.path` asks: `""` = none (no thread,
/// `shards` disabled senders), anything else as `spawn_writer`.
pub fn start_access_log(
    path: &str,
    format: LogFormat,
    shards: usize,
    queue_len: usize,
) -> io::Result<(Option<AccessLogWriter>, Vec<AccessLogSender>)> {
    if path.is_empty() {
        let senders = (0..shards).map(|_| AccessLogSender::disabled()).collect();
        return Ok((None, senders));
    }
    let (writer, senders) = spawn_writer(path, format, shards, queue_len)?;
    Ok((Some(writer), senders))
}

/// Opens the log (`"-"` = stdout; else appends, creating the file) and starts the writer
/// with one queue of `queue_len` records per shard. Fails only if the file cannot be
/// opened (an empty path included: use `start_access_log` for "no log") or the thread
/// cannot be spawned.
pub fn spawn_writer(
    path: &str,
    format: LogFormat,
    shards: usize,
    queue_len: usize,
) -> io::Result<(AccessLogWriter, Vec<AccessLogSender>)> {
    let (queues, senders) = AccessLogQueues::new(shards, queue_len);
    let writer = spawn_writer_on(queues, path, format)?;
    Ok((writer, senders))
}

/// Starts the writer on queues made beforehand with `AccessLogQueues::new`.
pub fn spawn_writer_on(
    queues: AccessLogQueues,
    path: &str,
    format: LogFormat,
) -> io::Result<AccessLogWriter> {
    let sink = Sink::open(path)?;
    let reopen = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(WriterCounters::default());
    let mut worker = Worker {
        receivers: queues.receivers,
        format,
        sink,
        buf: Vec::with_capacity(BATCH_BYTES * 2),
        lines: 0,
        clock: StartTimeCache::default(),
        reopen: reopen.clone(),
        stop: stop.clone(),
        counters: counters.clone(),
        failing: false,
    };
    let thread = std::thread::Builder::new()
        .name("egressd-access-log".into())
        .spawn(move || worker.run())?;
    Ok(AccessLogWriter {
        reopen,
        stop,
        counters,
        thread: Some(thread),
    })
}

impl AccessLogWriter {
    /// The flag a SIGUSR1 handler sets (e.g. `signal_hook::flag::register`); the writer
    /// reopens the file at its next pass (within about 10 ms) and clears it.
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }

    /// Asks for a reopen now (what SIGUSR1 does through the flag).
    pub fn request_reopen(&self) {
        self.reopen.store(true, Ordering::Release);
        if let Some(t) = &self.thread {
            t.thread().unpark();
        }
    }

    /// The writer's counters (`access_log.written`, `.write_failed`, `.reopen_failed`).
    pub fn counters(&self) -> Arc<WriterCounters> {
        self.counters.clone()
    }

    /// Writes what the queues hold, flushes and stops the thread. Records sent later are
    /// dropped (and counted) by their senders.
    pub fn shutdown(mut self) {
        self.stop_and_join();
    }

    fn stop_and_join(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(t) = self.thread.take() {
            t.thread().unpark();
            if t.join().is_err() {
                tracing::error!("access log writer thread panicked");
            }
        }
    }
}

impl Drop for AccessLogWriter {
    fn drop(&mut self) {
        self.stop_and_join();
    }
}

enum Sink {
    Stdout,
    File { path: PathBuf, file: File },
}

impl Sink {
    fn open(path: &str) -> io::Result<Sink> {
        if path == "-" {
            return Ok(Sink::Stdout);
        }
        if path.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "empty access log path (\"\" means no access log: start no writer)",
            ));
        }
        let path = PathBuf::from(path);
        let file = open_append(&path)?;
        Ok(Sink::File { path, file })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File { file, .. } => file.write_all(bytes),
        }
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Worker {
    receivers: Vec<Receiver<AccessRecord>>,
    format: LogFormat,
    sink: Sink,
    /// The batch: records are rendered straight into it, written as one `write`.
    buf: Vec<u8>,
    /// Lines in `buf`, counted as they are rendered (not by scanning the batch).
    lines: u64,
    /// The start time's date and clock text, rendered once per second.
    clock: StartTimeCache,
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    counters: Arc<WriterCounters>,
    /// True while writes fail, so the failure is logged once per streak, not per batch.
    failing: bool,
}

impl Worker {
    fn run(&mut self) {
        let mut last_flush = Instant::now();
        loop {
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.flush();
                self.reopen_sink();
            }
            if self.stop.load(Ordering::Acquire) {
                self.drain_for_shutdown();
                return;
            }
            let (got, live) = self.drain_pass();
            if got == 0 {
                self.flush();
                last_flush = Instant::now();
                if live == 0 {
                    return;
                }
                std::thread::park_timeout(IDLE_POLL);
            } else if last_flush.elapsed() >= MAX_FLUSH_DELAY {
                self.flush();
                last_flush = Instant::now();
            }
        }
    }

    /// Writes what is queued, bounded in time in case shards are still sending.
    fn drain_for_shutdown(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.drain_pass().0 > 0 && Instant::now() < deadline {}
        self.flush();
    }

    /// One pass over every queue, taking at most a bounded number of records from each
    /// so one busy shard cannot starve the others. Returns (records taken, queues still
    /// connected).
    fn drain_pass(&mut self) -> (usize, usize) {
        const PER_QUEUE: usize = 1024;
        let (mut got, mut live) = (0, 0);
        for i in 0..self.receivers.len() {
            let mut connected = true;
            for _ in 0..PER_QUEUE {
                match self.receivers[i].try_recv() {
                    Ok(rec) => {
                        self.format
                            .render_line(&rec, &mut self.buf, &mut self.clock);
                        self.lines += 1;
                        got += 1;
                        if self.buf.len() >= BATCH_BYTES {
                            self.flush();
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        connected = false;
                        break;
                    }
                }
            }
            live += usize::from(connected);
        }
        (got, live)
    }

    fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let lines = std::mem::take(&mut self.lines);
        match self.sink.write_all(&self.buf) {
            Ok(()) => {
                self.counters.written.fetch_add(lines, Ordering::Relaxed);
                self.failing = false;
            }
            Err(e) => {
                self.counters
                    .write_failed
                    .fetch_add(lines, Ordering::Relaxed);
                if !self.failing {
                    tracing::warn!(error = %e, "access log write failed; dropping lines until it recovers");
                    self.failing = true;
                }
            }
        }
        // Lines that could not be written are dropped: holding them would grow memory
        // without bound while the disk is full.
        self.buf.clear();
    }

    fn reopen_sink(&mut self) {
        if let Sink::File { path, file } = &mut self.sink {
            match open_append(path) {
                Ok(f) => *file = f,
                Err(e) => {
                    self.counters.reopen_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, path = %path.display(), "access log reopen failed; still writing to the old file");
                }
            }
        }
        self.counters.reopens.fetch_add(1, Ordering::Release);
    }
}
