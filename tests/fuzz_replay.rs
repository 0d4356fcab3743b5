#![cfg(target_os = "linux")]
//! The fuzz targets under plain `cargo test` (stable toolchain, no
//! libFuzzer): every file of the committed corpus (`fuzz/corpus/<target>/`)
//! is replayed, then a bounded random loop runs each target on generated
//! inputs (`FUZZ_ITERATIONS`, default 3000; `FUZZ_SEED` to reproduce).
//!
//! The targets count the process's open fds, so every test here holds `LOCK`.

mod fuzz_common;

use std::path::PathBuf;
use std::sync::Mutex;

static LOCK: Mutex<()> = Mutex::new(());

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join("corpus")
        .join(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("corpus {}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| {
            let data = std::fs::read(&p).unwrap();
            (p, data)
        })
        .collect()
}

fn replay(target: &str, f: fn(&[u8])) {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    for (path, data) in corpus(target) {
        eprintln!("{target}: {}", path.display());
        f(&data);
    }
}

fn random(f: fn(&[u8])) {
    let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let seed = std::env::var("FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    let n: usize = std::env::var("FUZZ_ITERATIONS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3000);
    eprintln!("FUZZ_SEED={seed} FUZZ_ITERATIONS={n}");
    let mut rng = fuzz_common::Rng::new(seed);
    for _ in 0..n {
        let input = rng.input();
        let r = std::panic::catch_unwind(|| f(&input));
        assert!(
            r.is_ok(),
            "failed on input {input:02x?} (FUZZ_SEED={seed}); add it to the corpus"
        );
    }
}

#[test]
fn frame_decode_corpus() {
    replay("frame_decode", fuzz_common::frame_decode);
}

#[test]
fn reassemble_corpus() {
    replay("reassemble", fuzz_common::reassemble);
}

#[test]
fn frame_decode_random() {
    random(fuzz_common::frame_decode);
}

#[test]
fn reassemble_random() {
    random(fuzz_common::reassemble);
}
