//! egressd's own logs: `tracing` to stderr. `--log-level` beats RUST_LOG beats the file's
//! `logLevel`. Under systemd (JOURNAL_STREAM set) timestamps are left to the journal.

use tracing_subscriber::EnvFilter;

pub fn init(cli_level: Option<&str>, file_level: &str) {
    let filter = match cli_level {
        Some(level) => EnvFilter::new(level),
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(file_level)),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().with_ansi(false).try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
    // A second init (tests) keeps the first subscriber.
    let _ = result;
}
