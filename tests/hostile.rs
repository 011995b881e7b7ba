//! The hostile-input campaign: files and commands a careless user or an attacker would try
//! against the host tools, each with the answer Vigil must give.
//!
//! Every case runs the real `vigil` binary and asserts the exit code, that the message names
//! the problem, that nothing panicked, and that what was stored before survived byte for
//! byte. The cases needing a device on a serial line are in `tests/serial.rs`; the report
//! store's power-cut and bit-flip sweeps are unit tests of `vigil_runtime::store`.
//! `docs/reliability.md` lists which test backs which guarantee.
// Helpers outside #[test] functions build fixtures; a failure there is a test failure.
#![allow(clippy::unwrap_used)]

mod common;

use common::{artefacts, text, vigil};
use std::path::{Path, PathBuf};
use vigil_client::update_file::UpdateFile;
use vigil_core::adapt::HeadSnapshot;
use vigil_core::update::{HeadWeights, UpdateHeader, UpdateKind};

/// What a case expects of the command it ran.
struct Expect {
    /// Text the error must contain, naming the problem.
    says: &'static str,
    /// Files whose bytes must be the same after the command as before.
    unchanged: Vec<PathBuf>,
    /// Files the command must not have created.
    absent: Vec<PathBuf>,
}

/// One case: its name (the finding it reproduces, or the new case it is) and a
/// setup that prepares files in a folder and returns the command line with its expectation.
struct Case {
    name: &'static str,
    setup: fn(&Path) -> (Vec<String>, Expect),
}

fn s(p: &Path) -> String {
    p.to_str().expect("temporary paths are UTF-8").to_owned()
}

fn expect(says: &'static str, unchanged: &[&Path], absent: &[&Path]) -> Expect {
    Expect {
        says,
        unchanged: unchanged.iter().map(|p| p.to_path_buf()).collect(),
        absent: absent.iter().map(|p| p.to_path_buf()).collect(),
    }
}

fn run_ok(args: &[&str]) {
    let o = vigil(args);
    assert!(o.status.success(), "vigil {args:?}: {:?}", text(&o));
}

/// A key pair `NAME` / `NAME.pub` in `dir`.
fn keygen(dir: &Path, name: &str) -> PathBuf {
    let key = dir.join(name);
    run_ok(&["keygen", "-o", &s(&key)]);
    key
}

/// The built-in model's head exported as an unsigned update of `version`.
fn head_file(dir: &Path, name: &str, version: u32) -> PathBuf {
    let path = dir.join(name);
    run_ok(&["export-head", "-o", &s(&path), "--version", &version.to_string()]);
    path
}

/// `file`'s update rewritten by `edit` (payload and header re-made so that the file is
/// consistent, as an attacker with the format's documentation would make it).
fn rewrite_head(file: &Path, out: &Path, edit: impl FnOnce(&mut vigil_core::update::HeadUpdate)) {
    let update = UpdateFile::read(file).unwrap();
    let mut snapshot = HeadSnapshot::decode(&update.payload).unwrap();
    edit(&mut snapshot.head);
    let mut payload = postcard::to_allocvec(&snapshot.head).unwrap();
    payload.extend(postcard::to_allocvec(&snapshot.stats).unwrap());
    let header = UpdateHeader::for_payload(
        UpdateKind::Head,
        snapshot.head.model_hash,
        snapshot.head.version,
        &payload,
    );
    UpdateFile { header, payload, signature: None }.write(out).unwrap();
}

/// A folder of three device snapshots of the built-in model; returns it.
fn snapshot_folder(dir: &Path) -> PathBuf {
    let folder = dir.join("snapshots");
    std::fs::create_dir_all(&folder).unwrap();
    for i in 0..3 {
        head_file(&folder, &format!("device-{i}.vup"), 4);
    }
    folder
}

/// The built-in model with one metadata value replaced.
fn model_with(dir: &Path, key: &str, value: &str) -> PathBuf {
    let bytes = vigil_runtime::builtin::REFERENCE_MODEL;
    let mut proto = vigil_runtime::onnx::decode_model(bytes, Path::new("built-in")).unwrap();
    let entry = proto.metadata_props.iter_mut().find(|e| e.key == key).expect("the key exists");
    entry.value = value.to_owned();
    let out = dir.join(format!("{}.onnx", key.replace('.', "-")));
    std::fs::write(&out, vigil_runtime::onnx::encode_model(&proto)).unwrap();
    out
}

/// One second of a simulated healthy machine, as WAV.
fn signal(dir: &Path) -> PathBuf {
    let path = dir.join("signal.wav");
    run_ok(&["simulate", "-o", &s(&path), "--seconds", "1"]);
    path
}

fn cases() -> Vec<Case> {
    vec![
        // Finding 2: fleet merge signed tampered snapshots.
        Case {
            name: "fleet merge: a snapshot with a weight edited to 1e6 (header re-made to match)",
            setup: |dir| {
                let folder = snapshot_folder(dir);
                let victim = folder.join("device-1.vup");
                rewrite_head(&victim.clone(), &victim, |h| match &mut h.weights {
                    HeadWeights::F32(w) => w[0] = 1.0e6,
                    HeadWeights::Int8 { scales, .. } => scales[0] = 1.0e6,
                });
                let key = keygen(dir, "publisher");
                let out = dir.join("merged.vup");
                let args = ["fleet", "merge", "--snapshots", &s(&folder), "--key", &s(&key), "-o", &s(&out)];
                (
                    args.map(String::from).to_vec(),
                    expect("device-1.vup: a weight of magnitude 1.000e6", &[&victim], &[&out]),
                )
            },
        },
        Case {
            name: "fleet merge: a snapshot whose payload no longer matches its SHA-256",
            setup: |dir| {
                let folder = snapshot_folder(dir);
                let victim = folder.join("device-2.vup");
                let mut bytes = std::fs::read(&victim).unwrap();
                let at = bytes.len() - 10;
                bytes[at] ^= 0x40;
                std::fs::write(&victim, &bytes).unwrap();
                let key = keygen(dir, "publisher");
                let out = dir.join("merged.vup");
                let args = ["fleet", "merge", "--snapshots", &s(&folder), "--key", &s(&key), "-o", &s(&out)];
                (args.map(String::from).to_vec(), expect("does not match the SHA-256", &[&victim], &[&out]))
            },
        },
        // Finding 3: update edge cases.
        Case {
            name: "update: a header saying version 40 over a payload saying 30",
            setup: |dir| {
                let file = head_file(dir, "head.vup", 30);
                let mut update = UpdateFile::read(&file).unwrap();
                update.header.version = 40;
                let tampered = dir.join("tampered.vup");
                std::fs::write(&tampered, update.to_bytes().unwrap()).unwrap();
                let key = keygen(dir, "publisher");
                let args = ["sign", "--key", &s(&key), &s(&tampered)];
                (
                    args.map(String::from).to_vec(),
                    expect("header says head version 40, the payload version 30", &[&tampered], &[]),
                )
            },
        },
        Case {
            name: "update: a valid file with junk bytes appended",
            setup: |dir| {
                let file = head_file(dir, "head.vup", 3);
                let mut bytes = std::fs::read(&file).unwrap();
                bytes.extend_from_slice(b"JUNK");
                std::fs::write(&file, &bytes).unwrap();
                let key = keygen(dir, "publisher");
                let args = ["sign", "--key", &s(&key), &s(&file)];
                (
                    args.map(String::from).to_vec(),
                    expect("4 unexpected bytes after the end of the update", &[&file], &[]),
                )
            },
        },
        Case {
            name: "update: push of an unsigned file",
            setup: |dir| {
                let file = head_file(dir, "head.vup", 3);
                let args = ["push", "--port", "/dev/ttyVIGIL-none", "--quiet", &s(&file)];
                (args.map(String::from).to_vec(), expect("is unsigned", &[&file], &[]))
            },
        },
        Case {
            name: "keys: vigil sign --key with the public key",
            setup: |dir| {
                let file = head_file(dir, "head.vup", 3);
                let key = keygen(dir, "publisher");
                let public = dir.join("publisher.pub");
                let args = ["sign", "--key", &s(&public), &s(&file)];
                (args.map(String::from).to_vec(), expect("is a public key", &[&file, &key, &public], &[]))
            },
        },
        Case {
            name: "keys: vigil serve --pubkey with the secret key",
            setup: |dir| {
                let key = keygen(dir, "publisher");
                let state = dir.join("state");
                let args =
                    ["serve", "--port", "/dev/ttyVIGIL-none", "--state", &s(&state), "--pubkey", &s(&key)];
                (args.map(String::from).to_vec(), expect("is a secret key", &[&key], &[&state]))
            },
        },
        Case {
            name: "keys: a key file that is not a key",
            setup: |dir| {
                let file = head_file(dir, "head.vup", 3);
                let key = dir.join("key.txt");
                std::fs::write(&key, "not a key\n").unwrap();
                let args = ["sign", "--key", &s(&key), &s(&file)];
                (
                    args.map(String::from).to_vec(),
                    expect("must hold 64 hex digits (a public key) or 128", &[&file], &[]),
                )
            },
        },
        // Finding 4: model metadata.
        Case {
            name: "metadata: vigil.input_name naming no input",
            setup: |dir| {
                let model = model_with(dir, "vigil.input_name", "no_such_input");
                let input = signal(dir);
                let args = ["run", "--model", &s(&model), "--input", &s(&input)];
                (
                    args.map(String::from).to_vec(),
                    expect(
                        "`vigil.input_name`: names `no_such_input`, which is not an input",
                        &[&model],
                        &[],
                    ),
                )
            },
        },
        Case {
            name: "metadata: vigil.embedding_node naming no node",
            setup: |dir| {
                let model = model_with(dir, "vigil.embedding_node", "nowhere");
                let input = signal(dir);
                let args = ["run", "--model", &s(&model), "--input", &s(&input)];
                (
                    args.map(String::from).to_vec(),
                    expect(
                        "`vigil.embedding_node`: names `nowhere`, which is not a node output",
                        &[&model],
                        &[],
                    ),
                )
            },
        },
        Case {
            name: "metadata: vigil.baseline_bands longer than the spectrum",
            setup: |dir| {
                let bands = vec!["1"; 5000].join(",");
                let model = model_with(dir, "vigil.baseline_bands", &bands);
                let input = signal(dir);
                let args = ["run", "--model", &s(&model), "--input", &s(&input)];
                (
                    args.map(String::from).to_vec(),
                    expect("`vigil.baseline_bands`: has 5000 values", &[&model], &[]),
                )
            },
        },
        Case {
            name: "metadata: a negative band energy in vigil.baseline_bands",
            setup: |dir| {
                let model = model_with(dir, "vigil.baseline_bands", "1,2,-3,4");
                let input = signal(dir);
                let args = ["run", "--model", &s(&model), "--input", &s(&input)];
                (
                    args.map(String::from).to_vec(),
                    expect("value 2 is -3; a band energy must be finite", &[&model], &[]),
                )
            },
        },
        Case {
            name: "metadata: export-head of a model with a NaN variance",
            setup: |dir| {
                let builtin = vigil_runtime::builtin::load_model(None).unwrap();
                let dim = builtin.metadata().prototype_var.len();
                let var = std::iter::once("NaN".to_owned())
                    .chain((1..dim).map(|_| "1".to_owned()))
                    .collect::<Vec<_>>()
                    .join(",");
                let model = model_with(dir, "vigil.prototype.var", &var);
                let out = dir.join("head.vup");
                let args = ["export-head", "--model", &s(&model), "-o", &s(&out)];
                (args.map(String::from).to_vec(), expect("vigil.prototype.var", &[&model], &[&out]))
            },
        },
        // Finding 5: input sanity.
        Case {
            name: "input: decimal commas in a one-column CSV",
            setup: |dir| {
                let csv = dir.join("commas.csv");
                let rows: String = (0..20_000).map(|i| format!("{},{}\n", i % 3, (i * 7) % 1000)).collect();
                std::fs::write(&csv, format!("# sample_rate_hz=16000\n{rows}")).unwrap();
                let args = ["run", "--input", &s(&csv)];
                (args.map(String::from).to_vec(), expect("if the comma is a decimal mark", &[&csv], &[]))
            },
        },
        Case {
            name: "input: a CSV line of 1 MiB without a line break",
            setup: |dir| {
                let csv = dir.join("one-line.csv");
                std::fs::write(&csv, "0.5,".repeat(256 * 1024)).unwrap();
                let args = ["run", "--rate", "16000", "--input", &s(&csv)];
                (args.map(String::from).to_vec(), expect("line 1 is longer than 65536 bytes", &[&csv], &[]))
            },
        },
        Case {
            name: "input: binary bytes in a CSV",
            setup: |dir| {
                let csv = dir.join("binary.csv");
                std::fs::write(&csv, b"# sample_rate_hz=16000\n0.1\n\xff\xfe\x00\x01\n").unwrap();
                let args = ["run", "--input", &s(&csv)];
                (args.map(String::from).to_vec(), expect("line 3 is not text", &[&csv], &[]))
            },
        },
    ]
}

/// Runs a case; `Err` says how it failed.
fn check(case: &Case) -> Result<(), String> {
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let (args, expect) = (case.setup)(dir.path());
    let before: Vec<Vec<u8>> =
        expect.unchanged.iter().map(|p| std::fs::read(p).unwrap_or_default()).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = vigil(&args);
    let (stdout, stderr) = text(&out);
    let said = format!("exit {:?}\nstdout: {stdout}\nstderr: {stderr}", out.status.code());
    match out.status.code() {
        Some(1) => {}
        Some(101) => return Err(format!("panicked\n{said}")),
        _ => return Err(format!("expected exit code 1\n{said}")),
    }
    if stderr.contains("panicked") {
        return Err(format!("panicked\n{said}"));
    }
    if !stderr.contains(expect.says) {
        return Err(format!("the message does not say `{}`\n{said}", expect.says));
    }
    for (path, bytes) in expect.unchanged.iter().zip(before) {
        if std::fs::read(path).unwrap_or_default() != bytes {
            return Err(format!("{} changed\n{said}", path.display()));
        }
    }
    if let Some(path) = expect.absent.iter().find(|p| p.exists()) {
        return Err(format!("{} was created\n{said}", path.display()));
    }
    Ok(())
}

#[test]
fn the_hostile_campaign_gets_clear_refusals_and_loses_nothing() {
    let cases = cases();
    let failures: Vec<String> = cases
        .iter()
        .filter_map(|case| check(case).err().map(|why| format!("{}: {why}", case.name)))
        .collect();
    let summary =
        format!("hostile campaign (tests/hostile.rs): {} cases ran, {} failed", cases.len(), failures.len());
    println!("{summary}");
    // scripts/test-all prints it after the suite (cargo keeps a passing test's output).
    std::fs::write(artefacts().join("hostile-campaign.txt"), format!("{summary}\n")).unwrap();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn fleet_merge_skips_a_tampered_snapshot_only_when_asked_and_names_it() {
    let dir = tempfile::tempdir().unwrap();
    let folder = snapshot_folder(dir.path());
    let victim = folder.join("device-0.vup");
    rewrite_head(&victim.clone(), &victim, |h| h.bias[0] = f32::NAN);
    let key = keygen(dir.path(), "publisher");
    let out = dir.path().join("merged.vup");
    let o = vigil(&[
        "fleet",
        "merge",
        "--snapshots",
        &s(&folder),
        "--key",
        &s(&key),
        "-o",
        &s(&out),
        "--skip-bad",
    ]);
    let (stdout, stderr) = text(&o);
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stderr.contains("skipped") && stderr.contains("device-0.vup"), "{stderr}");
    assert!(stdout.contains("merged 2 snapshots"), "{stdout}");
    // What was signed is the merge of the two good snapshots.
    let merged = UpdateFile::read(&out).unwrap();
    assert!(merged.signature.is_some());
    merged.head().unwrap().validate().unwrap();
}

#[test]
fn a_semicolon_csv_with_decimal_commas_is_read_as_numbers() {
    use vigil_runtime::input::{open, InputFormat};
    let dir = tempfile::tempdir().unwrap();
    // Two channels, as a spreadsheet in much of Europe would export them.
    let values: Vec<(f32, f32)> = (0..100).map(|i| (i as f32 * 0.25 - 3.5, -(i as f32) / 8.0)).collect();
    let rows: String = values
        .iter()
        .map(|(a, b)| format!("{};{}\n", a.to_string().replace('.', ","), b.to_string().replace('.', ",")))
        .collect();
    let csv = dir.path().join("european.csv");
    std::fs::write(&csv, format!("# sample_rate_hz = 16000\nx;y\n{rows}")).unwrap();
    let mut source = open(&s(&csv), InputFormat::Csv, None).unwrap();
    assert_eq!((source.channels(), source.sample_rate_hz()), (Some(2), Some(16000.0)));
    let (mut read, mut chunk) = (Vec::new(), Vec::new());
    loop {
        let more = source.read_chunk(&mut chunk, 1000).unwrap();
        read.extend_from_slice(&chunk);
        if !more {
            break;
        }
    }
    let expected: Vec<f32> = values.iter().flat_map(|&(a, b)| [a, b]).collect();
    assert_eq!(read, expected);
}
