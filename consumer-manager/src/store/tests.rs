//! The store: what is written survives a reopen; a failed store refuses writes.

use super::*;

use std::time::Duration;

#[tokio::test]
async fn cursors_acks_and_counts_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        let mut changes = Changes::new();
        changes.cursor(
            "s",
            2,
            StoredCursor {
                committed: 5,
                next: 9,
            },
        );
        changes.ack_range("s", 2, 7..8);
        changes.ack_range("s", 2, 8..9);
        changes.deliveries("s", 2, 6, 3);
        changes.forget_ack("s", 2, 8);
        changes.cursor(
            "s2",
            2,
            StoredCursor {
                committed: 1,
                next: 1,
            },
        );
        store.apply(changes).unwrap();
        store.flush().await.unwrap();
    }
    let store = Store::open(dir.path()).unwrap();
    let loaded = store.cursor("s", 2).unwrap().unwrap();
    assert_eq!(
        loaded.cursor,
        StoredCursor {
            committed: 5,
            next: 9
        }
    );
    assert_eq!(loaded.acked, vec![7..8]);
    assert_eq!(loaded.deliveries, vec![(6, 3)]);
    store.delete_subscription("s").unwrap();
    assert!(store.cursor("s", 2).unwrap().is_none());
    assert!(store.cursor("s2", 2).unwrap().is_some());
}

#[tokio::test]
async fn a_failed_store_refuses_every_write_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let failed = store.failed();
    assert!(!store.has_failed());
    store.fail(&"test");
    tokio::time::timeout(Duration::from_secs(5), failed)
        .await
        .expect("failed() resolves once the store fails");
    let mut changes = Changes::new();
    changes.ack_range("s", 0, 1..2);
    assert!(matches!(store.apply(changes), Err(Error::Reloading)));
    assert!(matches!(
        store.delete_subscription("s"),
        Err(Error::Reloading)
    ));
    assert!(matches!(store.flush().await, Err(Error::Reloading)));
}
