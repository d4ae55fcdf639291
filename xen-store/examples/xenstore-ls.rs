//! Prints a xenstore subtree, one `name = "value"` line per node, indented by depth, like
//! Debian's `xenstore-ls`.
//!
//! `xenstore-ls [PATH]` (default `/`), over the daemon's socket or `/dev/xen/xenbus`.

use xen_store::{Client, Error, Store};

fn list<T>(xs: &mut Client<T>, path: &str, depth: usize) -> Result<(), Error>
where
    T: embedded_io::Read + embedded_io::Write,
    T::Error: 'static,
{
    for name in xs.directory(path)? {
        let child = if path == "/" {
            format!("/{name}")
        } else {
            format!("{path}/{name}")
        };
        let value = match xs.read(&child) {
            Ok(value) => value.escape_ascii().to_string(),
            Err(error) => format!("<{error}>"),
        };
        println!("{:indent$}{name} = \"{value}\"", "", indent = depth);
        list(xs, &child, depth + 1)?;
    }
    Ok(())
}

fn main() {
    let path = std::env::args().nth(1).unwrap_or_else(|| "/".into());
    let result = Client::open()
        .map_err(Error::from)
        .and_then(|mut xs| list(&mut xs, &path, 0));
    if let Err(error) = result {
        eprintln!("xenstore-ls: {error}");
        std::process::exit(1);
    }
}
