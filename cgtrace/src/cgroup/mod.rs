//! cgroup hierarchies on this host, cgroup id → path resolution, and scratch
//! cgroups for scenarios and tests.

pub mod cpu;
pub mod files;
pub mod hierarchy;
pub mod resolve;
pub mod sampler;
pub mod scratch;
pub mod stat;

pub use hierarchy::{CgroupMode, Hierarchies, Hierarchy, Version};
pub use resolve::Resolver;

/// A cgroup file's text, read with one `open` and `read`s into a buffer:
/// `std::fs::read_to_string` first asks the file's size (a `statx` the
/// kernel answers with 4096 for every cgroup file anyway), which on a node
/// sampling thousands of cgroup files an interval is a quarter of the
/// system calls.
pub fn read_file(path: impl AsRef<std::path::Path>) -> std::io::Result<String> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(path)?;
    let mut bytes = Vec::with_capacity(4096);
    let mut buffer = [0u8; 4096];
    loop {
        match file.read(&mut buffer) {
            Ok(0) => break,
            Ok(read) => bytes.extend_from_slice(&buffer[..read]),
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    String::from_utf8(bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))
}
