//! A store failure keeps the error underneath it (the operating system's) as `source()`.

use std::error::Error as _;

use mailup_auth_core::StoreError;
use mailup_auth_store_sled::SledTokenStore;

#[test]
fn a_store_path_under_a_file_is_io_with_the_os_error_as_its_source() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, b"not a directory").unwrap();

    let error = SledTokenStore::open(file.join("store")).unwrap_err();
    assert!(matches!(error, StoreError::Io { .. }), "{error:?}");
    let source = error
        .source()
        .expect("the operating system's error is kept");
    let io = source
        .downcast_ref::<std::io::Error>()
        .expect("the source is the std::io::Error itself");
    // The message still says where and what, as before the source was kept.
    assert!(error.to_string().contains(&io.to_string()), "{error}");
    assert!(error.to_string().contains("a-file"), "{error}");
    // Errors stay Clone + PartialEq, the source compared by its message.
    assert_eq!(error.clone(), error);
}
