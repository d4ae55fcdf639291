//! apt, as the testbed runs it: the machine's own configuration for the machine's Debian release,
//! or a private configuration under `<target>/testbed/apt/<suite>` for another release.
//!
//! A private configuration never touches the machine's: its sources list, preferences, package
//! lists and download cache live under the target directory and are passed with `-o Dir::...`; of
//! the machine's configuration only `apt.conf.d` is read (its network settings apply). The mirror
//! is the one the machine's Debian sources already use, with the other release's suite.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use crate::{Error, Result, command_output};

/// Private package lists older than this are refreshed.
const LISTS_MAX_AGE: Duration = Duration::from_secs(24 * 3600);

/// The architectures the testbed downloads packages for.
const ARCHITECTURES: &[&str] = &["amd64", "arm64"];

/// How to run `apt-get` and `apt-cache` for one release.
#[derive(Debug, Clone)]
pub struct Apt {
    /// `-o` options of a private configuration; empty for the machine's own.
    options: Vec<String>,
    /// What `apt-get update` to suggest when the lists lack a package.
    describe: String,
}

impl Apt {
    /// The machine's own apt configuration.
    pub fn host() -> Self {
        Self {
            options: Vec::new(),
            describe: "the machine's apt (run `apt-get update` if its lists are old)".into(),
        }
    }

    /// A private configuration for Debian suite `suite` (e.g. `trixie`) under `dir`, with current
    /// package lists (fetched when missing or older than a day).
    pub fn private(dir: &Path, suite: &str) -> Result<Self> {
        let dir = dir.join(suite);
        let mirror = debian_mirror()?;
        let sources = format!(
            "deb [signed-by={}] {} {suite} main\n",
            mirror.signed_by.display(),
            mirror.uri
        );
        let paths = [
            dir.join("lists/partial"),
            dir.join("cache/archives/partial"),
            dir.join("etc/sources.list.d"),
            dir.join("etc/preferences.d"),
        ];
        for path in &paths {
            fs::create_dir_all(path).map_err(|e| Error::io(path, e))?;
        }
        let list = dir.join("etc/sources.list");
        if fs::read_to_string(&list).ok().as_deref() != Some(sources.as_str()) {
            fs::write(&list, &sources).map_err(|e| Error::io(&list, e))?;
            // A changed source invalidates the lists.
            let stamp = dir.join("lists/.updated");
            let _ = fs::remove_file(stamp);
        }
        let mut options = vec![
            format!("Dir::Etc::SourceList={}", list.display()),
            format!(
                "Dir::Etc::SourceParts={}",
                dir.join("etc/sources.list.d").display()
            ),
            format!(
                "Dir::Etc::PreferencesParts={}",
                dir.join("etc/preferences.d").display()
            ),
            format!(
                "Dir::Etc::Preferences={}",
                dir.join("etc/preferences").display()
            ),
            format!("Dir::State::Lists={}", dir.join("lists").display()),
            format!("Dir::Cache={}", dir.join("cache").display()),
            // Nothing is installed from this configuration: resolve against an empty system.
            "Dir::State::status=/dev/null".into(),
        ];
        // Only the package indices: no AppStream metadata (DEP-11), which the machine may enable.
        options.extend(
            [
                "DEP-11",
                "DEP-11-icons",
                "DEP-11-icons-small",
                "DEP-11-icons-hidpi",
            ]
            .iter()
            .map(|target| format!("Acquire::IndexTargets::deb::{target}::DefaultEnabled=false")),
        );
        options.extend(
            ARCHITECTURES
                .iter()
                .map(|arch| format!("APT::Architectures::={arch}")),
        );
        let apt = Self {
            options,
            describe: format!(
                "the private apt configuration for {suite} in {}",
                dir.display()
            ),
        };
        apt.refresh(&dir.join("lists/.updated"), &mirror.uri, suite)?;
        Ok(apt)
    }

    /// An `apt-get` or `apt-cache` command with this configuration.
    pub fn command(&self, program: &str) -> Command {
        let mut command = Command::new(program);
        for option in &self.options {
            command.args(["-o", option]);
        }
        command.env("DEBIAN_FRONTEND", "noninteractive");
        command
    }

    /// What this configuration is, for error messages.
    pub fn describe(&self) -> &str {
        &self.describe
    }

    fn refresh(&self, stamp: &Path, uri: &str, suite: &str) -> Result<()> {
        let fresh = fs::metadata(stamp)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .is_some_and(|age| age < LISTS_MAX_AGE);
        if fresh {
            return Ok(());
        }
        eprintln!("testbed: apt-get update for {suite} from {uri} (private lists)");
        command_output(self.command("apt-get").args(["update", "-q"]))?;
        fs::write(stamp, b"").map_err(|e| Error::io(stamp, e))
    }
}

/// The Debian mirror of the machine's own sources.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// The archive URI, e.g. `http://deb.debian.org/debian`.
    pub uri: String,
    /// The keyring the machine checks it with.
    pub signed_by: PathBuf,
}

/// The default keyring of Debian's archive (it also holds the keys of the next release).
const DEBIAN_KEYRING: &str = "/usr/share/keyrings/debian-archive-keyring.gpg";

/// Finds the mirror the machine uses for Debian's main archive (`bookworm`, not security).
fn debian_mirror() -> Result<Mirror> {
    let mut texts = Vec::new();
    if let Ok(text) = fs::read_to_string("/etc/apt/sources.list") {
        texts.push(text);
    }
    if let Ok(entries) = fs::read_dir("/etc/apt/sources.list.d") {
        let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
        paths.sort();
        for path in paths {
            let name = path.to_string_lossy();
            if name.ends_with(".sources") || name.ends_with(".list") {
                if let Ok(text) = fs::read_to_string(&path) {
                    texts.push(text);
                }
            }
        }
    }
    texts
        .iter()
        .find_map(|text| mirror_in(text, "bookworm"))
        .ok_or_else(|| {
            Error::new(
                "no Debian `bookworm` source in /etc/apt/sources.list{,.d}: cannot tell which mirror to use for other releases",
            )
        })
}

/// The first source of `suite` (exactly, not `suite-updates`) in one sources file, one-line or
/// deb822 format.
pub fn mirror_in(text: &str, suite: &str) -> Option<Mirror> {
    one_line_mirror(text, suite).or_else(|| deb822_mirror(text, suite))
}

fn one_line_mirror(text: &str, suite: &str) -> Option<Mirror> {
    text.lines().find_map(|line| {
        let line = line.split('#').next()?.trim();
        let rest = line.strip_prefix("deb ")?.trim_start();
        let (options, rest) = match rest.strip_prefix('[') {
            Some(bracketed) => {
                let (options, rest) = bracketed.split_once(']')?;
                (options, rest)
            }
            None => ("", rest),
        };
        let mut words = rest.split_whitespace();
        let uri = words.next()?;
        (words.next()? == suite).then(|| Mirror {
            uri: uri.trim_end_matches('/').to_string(),
            signed_by: options
                .split_whitespace()
                .find_map(|o| o.strip_prefix("signed-by="))
                .map_or_else(|| DEBIAN_KEYRING.into(), PathBuf::from),
        })
    })
}

fn deb822_mirror(text: &str, suite: &str) -> Option<Mirror> {
    text.split("\n\n").find_map(|stanza| {
        let field = |name: &str| {
            stanza.lines().find_map(|line| {
                let (key, value) = line.split_once(':')?;
                (key.trim().eq_ignore_ascii_case(name)).then(|| value.trim())
            })
        };
        let enabled = field("Enabled").is_none_or(|v| !v.eq_ignore_ascii_case("no"));
        let debs = field("Types")?.split_whitespace().any(|t| t == "deb");
        let has_suite = field("Suites")?.split_whitespace().any(|s| s == suite);
        if !(enabled && debs && has_suite) {
            return None;
        }
        Some(Mirror {
            uri: field("URIs")?
                .split_whitespace()
                .next()?
                .trim_end_matches('/')
                .to_string(),
            signed_by: field("Signed-By").map_or_else(|| DEBIAN_KEYRING.into(), PathBuf::from),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deb822_sources_give_the_main_archive_not_security() {
        let text = "Types: deb\n# a comment\nURIs: http://mirror.example/debian/\n\
                    Suites: bookworm bookworm-updates\nComponents: main\n\
                    Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
                    Types: deb\nURIs: http://mirror.example/debian-security\n\
                    Suites: bookworm-security\nComponents: main\n";
        assert_eq!(
            mirror_in(text, "bookworm"),
            Some(Mirror {
                uri: "http://mirror.example/debian".into(),
                signed_by: DEBIAN_KEYRING.into(),
            })
        );
        assert_eq!(mirror_in(text, "trixie"), None);
    }

    #[test]
    fn one_line_sources_with_and_without_options() {
        let text = "# deb http://old.example/debian bookworm main\n\
                    deb-src http://src.example/debian bookworm main\n\
                    deb [arch=amd64 signed-by=/etc/keys/d.gpg] http://m.example/debian bookworm main\n";
        assert_eq!(
            mirror_in(text, "bookworm"),
            Some(Mirror {
                uri: "http://m.example/debian".into(),
                signed_by: "/etc/keys/d.gpg".into(),
            })
        );
        let plain = "deb http://m.example/debian bookworm-updates main\ndeb http://n.example/debian bookworm main\n";
        assert_eq!(
            mirror_in(plain, "bookworm").map(|m| m.uri),
            Some("http://n.example/debian".into())
        );
    }

    #[test]
    fn disabled_deb822_stanzas_are_skipped() {
        let text = "Enabled: no\nTypes: deb\nURIs: http://off.example/debian\nSuites: bookworm\n\n\
                    Types: deb\nURIs: http://on.example/debian\nSuites: bookworm\n";
        assert_eq!(
            mirror_in(text, "bookworm").map(|m| m.uri),
            Some("http://on.example/debian".into())
        );
    }
}
