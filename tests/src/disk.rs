//! Small real filesystems for full-disk tests: a tmpfs, or an ext4 image on a loop
//! device, mounted over a temp dir and unmounted when dropped. Mounting needs root;
//! without it a test says it did not run, unless `PUBSUB_TESTS_REQUIRE_ROOT` is set
//! (as in CI), where that is a failure.

use std::path::Path;
use std::process::Command;

/// A mounted small filesystem.
pub struct SmallDisk {
    mount: tempfile::TempDir,
    /// Holds the ext4 image, if any.
    _image: Option<tempfile::TempDir>,
}

impl SmallDisk {
    /// A tmpfs of `mib` MiB.
    pub fn tmpfs(mib: u32) -> Option<SmallDisk> {
        let mount = tempfile::tempdir().unwrap();
        let size = format!("size={mib}m");
        let ok = run(Command::new("mount")
            .args(["-t", "tmpfs", "-o", &size, "tmpfs"])
            .arg(mount.path()))?;
        ok.then_some(SmallDisk {
            mount,
            _image: None,
        })
    }

    /// An ext4 filesystem of `mib` MiB in an image file on a loop device.
    pub fn ext4(mib: u32) -> Option<SmallDisk> {
        let image_dir = tempfile::tempdir().unwrap();
        let image = image_dir.path().join("disk.img");
        std::fs::File::create(&image)
            .unwrap()
            .set_len(u64::from(mib) << 20)
            .unwrap();
        run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image))?;
        let mount = tempfile::tempdir().unwrap();
        let ok = run(Command::new("mount")
            .args(["-o", "loop"])
            .arg(&image)
            .arg(mount.path()))?;
        ok.then_some(SmallDisk {
            mount,
            _image: Some(image_dir),
        })
    }

    /// Where it is mounted.
    pub fn path(&self) -> &Path {
        self.mount.path()
    }

    /// Writes a file of `bytes` at `name` (real blocks, not sparse), or as much of it
    /// as fits; removing it with [`SmallDisk::free`] gives the space back.
    pub fn take(&self, name: &str, bytes: u64) {
        use std::io::Write;
        let mut file = std::fs::File::create(self.path().join(name)).unwrap();
        let chunk = vec![1u8; 64 << 10];
        let mut written = 0;
        while written < bytes && file.write_all(&chunk).is_ok() {
            written += chunk.len() as u64;
        }
        let _ = file.sync_all();
    }

    /// Removes a file made by [`SmallDisk::take`].
    pub fn free(&self, name: &str) {
        std::fs::remove_file(self.path().join(name)).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazy: a killed server's files may still be closing. A loop device mounted
        // with `-o loop` is detached with the unmount.
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mount.path())
            .status();
    }
}

/// Runs a setup command: `Some(true)` if it worked, `None` (after saying so) when it
/// failed and root is not required.
fn run(command: &mut Command) -> Option<bool> {
    let output = command.output().unwrap();
    if output.status.success() {
        return Some(true);
    }
    let why = String::from_utf8_lossy(&output.stderr).trim().to_string();
    assert!(
        std::env::var_os("PUBSUB_TESTS_REQUIRE_ROOT").is_none(),
        "cannot set up a small disk ({command:?}): {why}"
    );
    eprintln!("full-disk test NOT RUN: {command:?} failed (needs root): {why}");
    None
}
