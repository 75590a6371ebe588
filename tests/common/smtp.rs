//! `SmtpSink`: a real SMTP server for the tests, aiosmtpd run by `tests/support/smtp_sink.py`,
//! which keeps every mail it accepts and refuses some recipients the way relays do.
//!
//! aiosmtpd is a test tool the project installs itself (`scripts/test-deps.sh`); without it the
//! tests that need it fail, saying so, rather than skip.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tempfile::TempDir;

/// How long the sink may take from spawn to accepting connections.
const READY_TIMEOUT: Duration = Duration::from_secs(20);

/// An aiosmtpd server on a loopback port; killed when dropped.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    mails: PathBuf,
    _dir: TempDir,
}

impl SmtpSink {
    /// A sink on a free port.
    pub fn start() -> Self {
        Self::start_on(0)
    }

    /// A sink on `port` (0 picks a free one).
    pub fn start_on(port: u16) -> Self {
        let probe = Command::new("python3")
            .args(["-c", "import aiosmtpd"])
            .stderr(Stdio::null())
            .status()
            .expect("run python3");
        assert!(
            probe.success(),
            "the SMTP tests need aiosmtpd: run scripts/test-deps.sh"
        );
        let dir = tempfile::tempdir().expect("create a directory for the sink's mails");
        let mails = dir.path().join("mails.jsonl");
        let mut child = Command::new("python3")
            .arg(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/tests/support/smtp_sink.py"
            ))
            .arg(port.to_string())
            .arg(&mails)
            .stdout(Stdio::piped())
            .spawn()
            .expect("spawn tests/support/smtp_sink.py");
        let stdout = child.stdout.take().expect("the sink's stdout");
        let (lines, ready) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if lines.send(line).is_err() {
                    break;
                }
            }
        });
        let mut sink = Self {
            child,
            port,
            mails,
            _dir: dir,
        };
        let line = ready
            .recv_timeout(READY_TIMEOUT)
            .expect("the sink prints `ready PORT` once it listens");
        sink.port = line
            .strip_prefix("ready ")
            .and_then(|port| port.parse().ok())
            .unwrap_or_else(|| panic!("the sink said {line:?}, not `ready PORT`"));
        sink
    }

    /// Every mail accepted so far, oldest first.
    pub fn mails(&self) -> Vec<Value> {
        match std::fs::read_to_string(&self.mails) {
            Ok(text) => text
                .lines()
                .map(|line| serde_json::from_str(line).expect("a JSON line per mail"))
                .collect(),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(error) => panic!("read the sink's mails: {error}"),
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The decoded text of `mail`'s part of `content_type`.
pub fn part<'a>(mail: &'a Value, content_type: &str) -> &'a str {
    mail["parts"]
        .as_array()
        .and_then(|parts| parts.iter().find(|p| p["content_type"] == content_type))
        .and_then(|p| p["text"].as_str())
        .unwrap_or_else(|| panic!("no {content_type} part in {mail}"))
}
