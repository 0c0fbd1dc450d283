//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::fs;
use std::path::{Path, PathBuf};

/// `sysctl/tests/fixtures/<name>`.
pub fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A scratch copy of a fixture that the test may edit; removed on drop.
pub struct Scratch(pub PathBuf);

impl Scratch {
    pub fn of(name: &str, tag: &str) -> Scratch {
        let dir =
            std::env::temp_dir().join(format!("c10m-sysctl-{}-{tag}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        copy_tree(&fixture(name), &dir);
        Scratch(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).unwrap();
    for entry in fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The entries the kernel hides inside a network namespace other than the host's (measured
/// with `unshare -n`, see docs/TUNING.md).
pub const HIDDEN_IN_A_NETNS: [&str; 3] = [
    "sys/net/core/netdev_max_backlog",
    "sys/net/ipv4/tcp_mem",
    "sys/net/ipv4/tcp_max_orphans",
];

/// A scratch copy of a fixture as a process inside a network namespace (a container) sees it.
pub fn in_a_netns(name: &str, tag: &str) -> Scratch {
    let s = Scratch::of(name, tag);
    for entry in HIDDEN_IN_A_NETNS {
        fs::remove_file(s.path().join(entry)).unwrap();
    }
    s
}
