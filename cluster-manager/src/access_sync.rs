//! Keeps a node's [`Access`] (what its auth layer checks calls against) equal to the
//! replicated tokens and rules, and makes the first admin token when authentication is
//! first turned on.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use pubsub_proto::auth::{self, Access, NewToken};

use crate::command::Command;
use crate::manager::Manager;

/// The file the first admin token is written to, in the node's data directory.
pub(crate) const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Runs for the life of a node: updates `access` after every applied change and, with
/// authentication on, makes the admin token if this node leads and none was ever made.
pub(crate) async fn keep_access(
    manager: Arc<Manager>,
    access: Arc<Access>,
    token_path: PathBuf,
    given: Option<NewToken>,
) {
    let mut watching = manager.subscribe();
    let mut stopping = manager.stopping();
    loop {
        let view = watching.borrow_and_update().clone();
        access.update(&view.state.access().to_wire(view.applied_index));
        let leads = manager.leader_id() == Some(manager.id());
        let bootstrap = access.is_on() && leads && view.state.access().never_issued();
        if bootstrap && let Err(e) = bootstrap_admin(&manager, &token_path, given.clone()).await {
            tracing::warn!(error = %e, "cannot make the admin token yet; retrying");
            tokio::time::sleep(Duration::from_secs(1)).await;
            continue;
        }
        tokio::select! {
            changed = watching.changed() => if changed.is_err() { return },
            // A leader change does not touch the state: look again now and then.
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            _ = stopping.wait_for(|stop| *stop) => return,
        }
    }
}

/// Commits the hash of the operator's admin token (`given`), or writes a new one to
/// `path` (mode 0600) and then commits its hash. The file comes first: a token
/// committed but never written would lock everyone out.
async fn bootstrap_admin(
    manager: &Manager,
    path: &Path,
    given: Option<NewToken>,
) -> Result<(), String> {
    // A token this node wrote before (a restart that looked before its log was
    // applied) is offered again, never replaced or removed.
    let given = given.or_else(|| {
        std::fs::read_to_string(path)
            .ok()
            .and_then(|text| auth::adopt_token(&text))
    });
    let made_here = given.is_none();
    let token = match given {
        Some(token) => token,
        None => {
            let token = auth::generate_token();
            write_private(path, &token.token).map_err(|e| format!("{}: {e}", path.display()))?;
            token
        }
    };
    let written = manager
        .write(Command::BootstrapAdmin {
            id: token.id,
            hash: token.hash,
            now_ms: 0,
        })
        .await
        .map_err(|e| e.to_string())?;
    match written.response {
        crate::command::Response::AccessChanged { count: 1 } if made_here => {
            tracing::info!(path = %path.display(), "authentication is on; the admin token was written to this file (mode 0600)");
        }
        crate::command::Response::AccessChanged { count: 1 } => {
            tracing::info!("authentication is on; the given admin token is the first token");
        }
        // Another leader made one first: this file holds nothing valid.
        _ if made_here => {
            let _ = std::fs::remove_file(path);
        }
        _ => {}
    }
    Ok(())
}

/// Writes `contents` to a file only the owner can read, durably and whole: it is
/// written beside `path` and renamed over it, so a reader never sees part of a token.
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut draft = path.as_os_str().to_owned();
    draft.push(".new");
    let draft = PathBuf::from(draft);
    // A file left by an attempt that crashed or lost the race may have other permissions.
    match std::fs::remove_file(&draft) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&draft)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()?;
    std::fs::rename(&draft, path)?;
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::write_private;

    #[test]
    fn a_token_file_is_private_whole_and_replaces_an_old_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("admin.token");
        std::fs::write(&path, "old").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        write_private(&path, "secret").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "secret\n");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(!dir.path().join("admin.token.new").exists());
    }
}
