//! The microcontroller firmware, for real: the release build for thumbv7em runs on QEMU's
//! `mps2-an386` (Cortex-M4F) and the host's `vigil` commands talk to its UART over a pty.
//!
//! `scripts/test-all` builds the firmware first and sets `VIGIL_REQUIRE_FIRMWARE=1`; without
//! it, a missing firmware build or QEMU skips this test with one line saying so.

mod common;

use common::{artefacts, ok, refused};
use std::io::Write;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};
use vigil_client::client::Client;
use vigil_client::update_file::UpdateFile;
use vigil_core::update::HeadUpdate;
use vigil_core::wire::Message;
use vigil_serial::open_port;

fn firmware_elf() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/thumbv7em-none-eabihf/firmware/vigil-mps2")
}

/// The board under QEMU: its UART on a pty, its monitor on a socket, its semihosting log
/// (QEMU's output) in a file.
struct Board {
    qemu: Child,
    pty: String,
    monitor: PathBuf,
    log: PathBuf,
}

impl Board {
    /// Boots the firmware; with `count_instructions`, QEMU's virtual clock advances by
    /// instructions executed (`-icount shift=0`), which makes the firmware's SysTick
    /// timings instruction counts but slows the emulated UART about fourfold.
    fn start(dir: &Path, key: &Path, count_instructions: bool) -> Board {
        let name = if count_instructions { "icount" } else { "board" };
        let monitor = dir.join(format!("{name}.sock"));
        let log = dir.join(format!("{name}.log"));
        let output = std::fs::File::create(&log).expect("log file");
        let qemu = Command::new("qemu-system-arm")
            .args(["-machine", "mps2-an386", "-cpu", "cortex-m4", "-display", "none", "-serial", "pty"])
            .args(["-semihosting-config", "enable=on,target=native"])
            .args(if count_instructions { &["-icount", "shift=0"][..] } else { &[] })
            .arg("-monitor")
            .arg(format!("unix:{},server,nowait", monitor.display()))
            .arg("-kernel")
            .arg(firmware_elf())
            .arg("-device")
            .arg(format!("loader,file={},addr=0x7f000", key.display()))
            .stdout(output.try_clone().expect("log file"))
            .stderr(output)
            .spawn()
            .expect("qemu-system-arm starts");
        let mut board = Board { qemu, pty: String::new(), monitor, log };
        // QEMU names the pty on its output, before the guest's first log line.
        board.wait_for_log("redirected to ", 1);
        let log = board.log();
        let named = log.split("redirected to ").nth(1).and_then(|rest| rest.split_whitespace().next());
        board.pty = named.expect("QEMU names its pty").to_string();
        board.wait_for_log("serving on UART0", 1);
        board
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until `needle` has appeared `times` times in the log.
    fn wait_for_log(&self, needle: &str, times: usize) {
        let start = Instant::now();
        while self.log().matches(needle).count() < times {
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no `{needle}` from the firmware:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Resets the board as a watchdog or the reset button would; RAM keeps its contents.
    fn reset(&self) {
        let mut socket = UnixStream::connect(&self.monitor).expect("QEMU monitor");
        socket.write_all(b"system_reset\n").expect("monitor command");
        std::thread::sleep(Duration::from_millis(200));
        self.wait_for_log("serving on UART0", 2);
    }

    /// The last value the firmware logged after `prefix`.
    fn logged_number(&self, prefix: &str) -> Option<u64> {
        let log = self.log();
        let line = log.lines().rev().find(|l| l.contains(prefix))?;
        line.split(prefix).nth(1)?.split_whitespace().next()?.parse().ok()
    }
}

impl Drop for Board {
    fn drop(&mut self) {
        let _ = self.qemu.kill();
        let _ = self.qemu.wait();
    }
}

fn available() -> bool {
    let required = std::env::var_os("VIGIL_REQUIRE_FIRMWARE").is_some_and(|v| v == "1");
    let qemu = Command::new("qemu-system-arm").arg("--version").output().is_ok_and(|o| o.status.success());
    let elf = firmware_elf().exists();
    if required {
        assert!(qemu, "qemu-system-arm is not installed");
        assert!(elf, "the firmware was not built: {}", firmware_elf().display());
    } else if !(qemu && elf) {
        println!(
            "SKIPPED: firmware under QEMU (needs qemu-system-arm and {}; scripts/test-all provides both)",
            firmware_elf().display()
        );
    }
    qemu && elf
}

#[test]
fn the_firmware_under_qemu_serves_the_host_commands_and_keeps_its_head_through_a_torn_update() {
    if !available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_string();
    ok(&["keygen", "-o", &path("key")]);
    ok(&["keygen", "-o", &path("other")]);
    let public_hex = std::fs::read_to_string(path("key.pub")).unwrap();
    let public: Vec<u8> =
        (0..32).map(|i| u8::from_str_radix(&public_hex.trim()[2 * i..2 * i + 2], 16).unwrap()).collect();
    std::fs::write(path("key.bin"), &public).unwrap();

    // What a window costs, in instructions, on a board whose clock counts them.
    let cost = {
        let counting = Board::start(dir.path(), Path::new(&path("key.bin")), true);
        counting
            .log()
            .lines()
            .find(|l| l.contains("one window"))
            .map(String::from)
            .expect("the firmware logs a window's cost")
    };
    println!("firmware: {cost}");
    let _ = std::fs::remove_file(artefacts().join("firmware-measurements.txt"));

    let board = Board::start(dir.path(), Path::new(&path("key.bin")), false);
    let port = board.pty.clone();
    let status = ok(&["status", "--port", &port]);
    assert!(status.contains("mps2-an386") && status.contains("head     version 0"), "{status}");

    // A signed feature head, trained on the host for this machine.
    let trained = ok(&["feature-head", "-o", &path("head.vup")]);
    assert!(trained.contains("held-out accuracy"), "{trained}");
    ok(&["sign", "--key", &path("key"), &path("head.vup")]);
    ok(&["push", "--port", &port, "-q", &path("head.vup")]);
    assert!(ok(&["status", "--port", &port]).contains("head     version 1"));
    board.wait_for_log("now scoring with head version 1", 1);

    // Healthy running, then an outer-race fault, streamed in as samples.
    ok(&["simulate", "-o", &path("healthy.csv"), "--seconds", "2", "--seed", "5"]);
    let fed = ok(&["feed", "--port", &port, &path("healthy.csv")]);
    assert!(fed.contains("alarm quiet") && fed.contains("next report 0"), "healthy stream: {fed}");
    ok(&[
        "simulate",
        "-o",
        &path("faulty.csv"),
        "--seconds",
        "2",
        "--fault",
        "outer-race",
        "--severity",
        "0.6",
        "--seed",
        "6",
    ]);
    let fed = ok(&["feed", "--port", &port, &path("faulty.csv")]);
    assert!(fed.contains("alarm ACTIVE"), "faulty stream: {fed}");

    let pulled = ok(&["reports", "pull", "--port", &port]);
    let first: serde_json::Value = serde_json::from_str(pulled.lines().next().expect("a report")).unwrap();
    assert_eq!(first["kind"], "AlarmRaised", "{pulled}");
    assert_eq!(first["class"], "outer_race", "{pulled}");
    assert!(first["stream_time_s"].as_f64().unwrap() > 2.0, "alarm before the fault: {pulled}");
    let sequence = first["sequence"].as_u64().unwrap().to_string();
    ok(&["label", "--port", &port, "--report", &sequence, "--class", "outer_race"]);

    // The head snapshot is the head pushed.
    ok(&["snapshot", "--port", &port, "-o", &path("snapshot.vup")]);
    let pushed = UpdateFile::read(Path::new(&path("head.vup"))).unwrap().head().unwrap();
    let snapshot: HeadUpdate = UpdateFile::read(Path::new(&path("snapshot.vup"))).unwrap().head().unwrap();
    assert_eq!(snapshot, pushed);

    // A head signed with the wrong key is refused.
    ok(&["feature-head", "-o", &path("v2.vup"), "--version", "2", "--seed", "9"]);
    ok(&["sign", "--key", &path("other"), &path("v2.vup")]);
    let why = refused(&["push", "--port", &port, "-q", &path("v2.vup")]);
    assert!(why.contains("signature"), "{why}");
    assert!(ok(&["status", "--port", &port]).contains("head     version 1"));

    // A torn update: 400 bytes of a properly signed version 3, then the board resets.
    ok(&["feature-head", "-o", &path("v3.vup"), "--version", "3", "--seed", "10"]);
    ok(&["sign", "--key", &path("key"), &path("v3.vup")]);
    let v3 = UpdateFile::read(Path::new(&path("v3.vup"))).unwrap();
    {
        let link = open_port(&port, 115_200, Duration::from_millis(20)).unwrap();
        let mut client = Client::new(Box::new(link));
        let acked = |m: &Message<'_>| matches!(m, Message::Ack(_));
        client.request(&Message::UpdateBegin(v3.header), acked).unwrap();
        client.request(&Message::UpdateChunk { offset: 0, data: &v3.payload[..400] }, acked).unwrap();
    }
    let status = ok(&["status", "--port", &port]);
    assert!(status.contains("receiving version 3: 400 of"), "{status}");
    board.reset();
    assert!(board.log().contains("head version 1 restored from the update slots"), "{}", board.log());
    assert!(ok(&["status", "--port", &port]).contains("head     version 1"));
    ok(&["snapshot", "--port", &port, "-o", &path("after-reset.vup")]);
    let after = UpdateFile::read(Path::new(&path("after-reset.vup"))).unwrap().head().unwrap();
    assert_eq!(after, pushed, "the torn update changed the head");

    // The whole update, sent again, applies.
    ok(&["push", "--port", &port, "-q", &path("v3.vup")]);
    assert!(ok(&["status", "--port", &port]).contains("head     version 3"));

    let stack = board.logged_number("peak stack while serving ").expect("the firmware logs its stack use");
    let start_stack =
        board.logged_number("peak stack during start-up ").expect("the firmware logs its start-up stack use");
    println!("firmware: peak stack while serving {stack} bytes, during start-up {start_stack} bytes");
    // scripts/test-all prints this file after the tests and checks the peak stack against
    // the RAM budget.
    let measured = format!(
        "{cost}\nvigil-firmware: peak stack while serving {stack} bytes (under QEMU, stack painting)\n\
         vigil-firmware: peak stack during start-up {start_stack} bytes (under QEMU, stack painting)\n"
    );
    std::fs::write(artefacts().join("firmware-measurements.txt"), measured).unwrap();
    let log = board.log();
    assert!(!log.contains("panic"), "{log}");
}
