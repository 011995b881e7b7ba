//! A Mosquitto broker of one's own, for the tests and the fleet benchmark: started on a
//! free loopback port with its own config file, stopped by its PID.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Where Debian installs the broker.
const BINARIES: [&str; 2] = ["/usr/sbin/mosquitto", "/usr/bin/mosquitto"];

/// A running Mosquitto; stopped (SIGTERM, so that it saves its sessions) when dropped.
#[derive(Debug)]
pub struct Mosquitto {
    child: Child,
    binary: &'static str,
    config: PathBuf,
    port: u16,
}

impl Mosquitto {
    /// The installed broker binary, if any.
    pub fn installed() -> Option<&'static str> {
        BINARIES.into_iter().find(|p| Path::new(p).exists())
    }

    /// Starts a broker on a free loopback port keeping its sessions in `dir`, with
    /// `listener` lines (TLS files, say) and `auth` lines (`allow_anonymous true`, or a
    /// password file). `Err` says why it could not start.
    pub fn start(dir: &Path, listener: &str, auth: &str) -> Result<Mosquitto, String> {
        let binary =
            Mosquitto::installed().ok_or("mosquitto is not installed (apt-get install mosquitto)")?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("no free loopback port: {e}"))?
            .port();
        let config = dir.join("mosquitto.conf");
        // Started as root, mosquitto would switch to its own user, who cannot read a
        // private temporary folder: it stays the caller's user.
        let user = std::env::var("USER").unwrap_or_else(|_| "root".into());
        let text = format!(
            "user {user}\nlistener {port} 127.0.0.1\n{listener}{auth}persistence true\npersistence_location {}/\n\
             persistent_client_expiration 1d\nmax_queued_messages 100000\n",
            dir.display()
        );
        std::fs::write(&config, text).map_err(|e| format!("cannot write {}: {e}", config.display()))?;
        let child = spawn(binary, &config)?;
        let broker = Mosquitto { child, binary, config, port };
        broker.wait_listening()?;
        Ok(broker)
    }

    /// Its port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The broker's process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `mqtt://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("mqtt://127.0.0.1:{}", self.port)
    }

    fn wait_listening(&self) -> Result<(), String> {
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                return Err(format!("mosquitto did not listen on port {} within 10 s", self.port));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    /// Stops the broker as an operator would (SIGTERM: it saves its sessions and exits).
    pub fn stop(&mut self) {
        let _ = Command::new("kill").args(["-TERM", &self.child.id().to_string()]).status();
        let _ = self.child.wait();
    }

    /// Starts it again on the same port with the same sessions.
    pub fn restart(&mut self) -> Result<(), String> {
        self.child = spawn(self.binary, &self.config)?;
        self.wait_listening()
    }
}

fn spawn(binary: &str, config: &Path) -> Result<Child, String> {
    Command::new(binary)
        .arg("-c")
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {binary}: {e}"))
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        self.stop();
    }
}
