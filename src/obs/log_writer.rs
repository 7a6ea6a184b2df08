//! The access-log writer thread and the per-shard queues that feed it.
//!
//! Owns: the shard-side `AccessLogSender`, which renders each record into a shard-local
//! batch and hands full batches (64 KiB, or whatever is pending at the shard's 100 ms tick)
//! to one bounded queue per shard (`std::sync::mpsc::sync_channel`); the writer thread,
//! which writes each batch with one `write` (dropping older written pages from the page
//! cache, see `log_cache_trim`), gives the emptied buffer back for reuse, and reopens the
//! file when the reopen flag (SIGUSR1) is set, for logrotate. A full queue
//! never blocks a shard: the batch is dropped and its lines counted in a shard-local
//! `Cell`. An empty path (`accessLog: {path: ""}`) means no access log: no thread, and
//! senders that discard.
//! Must not: block a shard, or share a counter between shards on the data path.
//!
//! Why shards render (measured in the `bench http` core layout): queueing each record to
//! the writer cost the shard a 400-byte copy, a channel operation and its strings'
//! allocations, and the writer freed those strings on another thread (glibc arena locks);
//! the log took 0.6–1.0 µs of a 9–10 µs request, now 0.2–0.4. Rendering on the shard
//! costs the same formatting, but nothing crosses threads per record, and the writer no
//! longer bounds the log rate of many shards. A line reaches the file within about 110 ms under any load.

use std::cell::{Cell, RefCell};
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::obs::access_log::AccessRecord;
use crate::obs::log_cache_trim::CacheTrim;
use crate::obs::log_format::{LogFormat, StartTimeCache};

/// Stat name of the lines shards dropped because their queue was full.
pub const STAT_DROPPED: &str = "access_log.dropped";
/// Stat names of the writer's own counters (see `AccessLogWriter::counters`).
pub const STAT_WRITTEN: &str = "access_log.written";
pub const STAT_WRITE_FAILED: &str = "access_log.write_failed";
pub const STAT_REOPEN_FAILED: &str = "access_log.reopen_failed";

/// How long the writer sleeps when every queue is empty. Shards never wake it (that
/// would cost them a syscall per batch), so this bounds how late a batch is written.
const IDLE_POLL: Duration = Duration::from_millis(10);
/// A shard hands its batch over once it holds this much.
const BATCH_BYTES: usize = 64 * 1024;
/// Batches the writer takes from one queue per pass, so one busy shard cannot starve
/// the others.
const PER_QUEUE: usize = 16;

/// An empty batch buffer: room for a full batch and the line that overflows it.
fn new_batch() -> Vec<u8> {
    Vec::with_capacity(BATCH_BYTES + BATCH_BYTES / 4)
}

/// Rendered lines on their way to the writer.
struct Batch {
    bytes: Vec<u8>,
    lines: u64,
}

/// A shard's end of its queue. `Send` (moved into the shard's thread), neither `Clone`
/// nor `Sync`: one per shard, so its batch and drop counter need no atomics.
pub struct AccessLogSender {
    /// None when the access log is off (`accessLog.path: ""`).
    log: Option<ShardLog>,
    dropped: Cell<u64>,
}

struct ShardLog {
    format: LogFormat,
    /// The start time's date and clock text, rendered once per second.
    clock: RefCell<StartTimeCache>,
    batch: RefCell<Vec<u8>>,
    /// Lines in `batch`.
    lines: Cell<u64>,
    to_writer: SyncSender<Batch>,
    /// Buffers the writer emptied, to render the next batches into.
    spare: Receiver<Vec<u8>>,
}

impl AccessLogSender {
    /// A sender for a gateway without an access log: `send` discards, counting nothing.
    pub fn disabled() -> Self {
        AccessLogSender {
            log: None,
            dropped: Cell::new(0),
        }
    }

    /// Renders `rec` into this shard's batch, handing the batch to the writer when it is
    /// full. Never blocks: a batch the queue cannot take is dropped and its lines counted.
    pub fn send(&self, rec: &AccessRecord) {
        let Some(log) = &self.log else {
            return;
        };
        let full = {
            let mut batch = log.batch.borrow_mut();
            log.format
                .render_line(rec, &mut batch, &mut log.clock.borrow_mut());
            batch.len() >= BATCH_BYTES
        };
        log.lines.set(log.lines.get() + 1);
        if full {
            self.flush();
        }
    }

    /// Hands what the batch holds to the writer now (the shard's tick, and shutdown).
    pub fn flush(&self) {
        let Some(log) = &self.log else {
            return;
        };
        let lines = log.lines.replace(0);
        if lines == 0 {
            return;
        }
        let bytes = std::mem::take(&mut *log.batch.borrow_mut());
        let next = match log.to_writer.try_send(Batch { bytes, lines }) {
            Ok(()) => log.spare.try_recv().unwrap_or_else(|_| new_batch()),
            // Full, or the writer has stopped: drop the lines, keep the buffer.
            Err(TrySendError::Full(batch) | TrySendError::Disconnected(batch)) => {
                self.dropped.set(self.dropped.get() + lines);
                let mut bytes = batch.bytes;
                bytes.clear();
                bytes
            }
        };
        *log.batch.borrow_mut() = next;
    }

    /// Lines this shard dropped so far (publish as `access_log.dropped`).
    pub fn dropped(&self) -> u64 {
        self.dropped.get()
    }
}

impl Drop for AccessLogSender {
    fn drop(&mut self) {
        self.flush();
    }
}

/// The writer thread's ends of the shards' queues, before a writer consumes them.
pub struct AccessLogQueues {
    queues: Vec<WriterQueue>,
}

struct WriterQueue {
    batches: Receiver<Batch>,
    spare: SyncSender<Vec<u8>>,
}

impl AccessLogQueues {
    /// One queue of `queue_len` batches (64 KiB each) per shard, rendered with `format`.
    pub fn new(
        shards: usize,
        queue_len: usize,
        format: &LogFormat,
    ) -> (Self, Vec<AccessLogSender>) {
        let (senders, queues) = (0..shards)
            .map(|_| {
                let (to_writer, batches) = sync_channel(queue_len);
                let (spare_tx, spare) = sync_channel(queue_len);
                let sender = AccessLogSender {
                    log: Some(ShardLog {
                        format: format.clone(),
                        clock: RefCell::new(StartTimeCache::default()),
                        batch: RefCell::new(new_batch()),
                        lines: Cell::new(0),
                        to_writer,
                        spare,
                    }),
                    dropped: Cell::new(0),
                };
                let queue = WriterQueue {
                    batches,
                    spare: spare_tx,
                };
                (sender, queue)
            })
            .unzip();
        (AccessLogQueues { queues }, senders)
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
/// with one queue of `queue_len` batches per shard. Fails only if the file cannot be
/// opened (an empty path included: use `start_access_log` for "no log") or the thread
/// cannot be spawned.
pub fn spawn_writer(
    path: &str,
    format: LogFormat,
    shards: usize,
    queue_len: usize,
) -> io::Result<(AccessLogWriter, Vec<AccessLogSender>)> {
    let sink = Sink::open(path)?;
    let (queues, senders) = AccessLogQueues::new(shards, queue_len, &format);
    let writer = spawn_writer_on(queues, sink)?;
    Ok((writer, senders))
}

/// Opens `path` as `spawn_writer` does and starts the writer on queues made beforehand
/// with `AccessLogQueues::new`.
pub fn spawn_writer_at(queues: AccessLogQueues, path: &str) -> io::Result<AccessLogWriter> {
    spawn_writer_on(queues, Sink::open(path)?)
}

fn spawn_writer_on(queues: AccessLogQueues, sink: Sink) -> io::Result<AccessLogWriter> {
    let reopen = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let counters = Arc::new(WriterCounters::default());
    let mut worker = Worker {
        queues: queues.queues,
        sink,
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

    /// Writes the batches the queues hold and stops the thread. Batches handed over later
    /// are dropped (and their lines counted) by their senders.
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
    File {
        path: PathBuf,
        file: File,
        trim: CacheTrim,
    },
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
        let trim = CacheTrim::new(&file);
        Ok(Sink::File { path, file, trim })
    }

    fn write_all(&mut self, bytes: &[u8]) -> io::Result<()> {
        match self {
            Sink::Stdout => {
                let mut out = io::stdout().lock();
                out.write_all(bytes)?;
                out.flush()
            }
            Sink::File { file, trim, .. } => {
                file.write_all(bytes)?;
                trim.appended(file, bytes.len());
                Ok(())
            }
        }
    }
}

fn open_append(path: &PathBuf) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

struct Worker {
    queues: Vec<WriterQueue>,
    sink: Sink,
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    counters: Arc<WriterCounters>,
    /// True while writes fail, so the failure is logged once per streak, not per batch.
    failing: bool,
}

impl Worker {
    fn run(&mut self) {
        loop {
            if self.reopen.swap(false, Ordering::AcqRel) {
                self.reopen_sink();
            }
            if self.stop.load(Ordering::Acquire) {
                self.drain_for_shutdown();
                return;
            }
            let (got, live) = self.drain_pass();
            if got == 0 {
                if live == 0 {
                    return;
                }
                std::thread::park_timeout(IDLE_POLL);
            }
        }
    }

    /// Writes what is queued, bounded in time in case shards are still sending.
    fn drain_for_shutdown(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.drain_pass().0 > 0 && Instant::now() < deadline {}
    }

    /// One pass over every queue, writing at most `PER_QUEUE` batches from each. Returns
    /// (batches written, queues still connected).
    fn drain_pass(&mut self) -> (usize, usize) {
        let (mut got, mut live) = (0, 0);
        for i in 0..self.queues.len() {
            let mut connected = true;
            for _ in 0..PER_QUEUE {
                match self.queues[i].batches.try_recv() {
                    Ok(batch) => {
                        got += 1;
                        let mut bytes = self.write(batch);
                        bytes.clear();
                        // Freed here when the shard already holds enough spares.
                        let _ = self.queues[i].spare.try_send(bytes);
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

    /// Writes one batch; gives its buffer back.
    fn write(&mut self, batch: Batch) -> Vec<u8> {
        match self.sink.write_all(&batch.bytes) {
            Ok(()) => {
                self.counters
                    .written
                    .fetch_add(batch.lines, Ordering::Relaxed);
                self.failing = false;
            }
            Err(e) => {
                // Lines that could not be written are dropped: holding them would grow
                // memory without bound while the disk is full.
                self.counters
                    .write_failed
                    .fetch_add(batch.lines, Ordering::Relaxed);
                if !self.failing {
                    tracing::warn!(error = %e, "access log write failed; dropping lines until it recovers");
                    self.failing = true;
                }
            }
        }
        batch.bytes
    }

    fn reopen_sink(&mut self) {
        if let Sink::File { path, file, trim } = &mut self.sink {
            match open_append(path) {
                Ok(f) => {
                    *trim = CacheTrim::new(&f);
                    *file = f;
                }
                Err(e) => {
                    self.counters.reopen_failed.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, path = %path.display(), "access log reopen failed; still writing to the old file");
                }
            }
        }
        self.counters.reopens.fetch_add(1, Ordering::Release);
    }
}
