//! Platforms (`os/arch[/variant]`) and the rule that picks an image index entry for a node.
//!
//! The matching follows containerd's default matcher (`platforms.Only`), which is what a
//! containerd node's CRI uses when it pulls: a node takes its own platform first, then the ones
//! its CPU also runs, best first (arm64 also runs arm/v8..v5, arm/v7 also v6 and v5, amd64 also
//! 386). Names are normalised first, the same way: `aarch64` is `arm64`, arm64's `v8` is the
//! same as no variant, a bare `arm` is `arm/v7`.

use std::fmt;
use std::str::FromStr;

/// What an image was built for: an OS, a CPU architecture and, for ARM, a variant.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Platform {
    os: String,
    architecture: String,
    #[serde(default)]
    variant: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlatformError {
    #[error("invalid platform {0:?}: expected os/arch or os/arch/variant, e.g. linux/arm64")]
    Syntax(String),
    #[error("unknown machine type {0:?} (from uname -m): give the platform explicitly")]
    UnknownMachine(String),
}

impl Platform {
    pub fn new(os: &str, architecture: &str, variant: Option<&str>) -> Platform {
        Platform {
            os: os.to_string(),
            architecture: architecture.to_string(),
            variant: variant.filter(|v| !v.is_empty()).map(str::to_string),
        }
    }

    /// `os/arch` or `os/arch/variant`, as `docker pull --platform` takes it.
    pub fn parse(text: &str) -> Result<Platform, PlatformError> {
        let parts: Vec<&str> = text.split('/').collect();
        let valid = |part: &&str| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
        };
        match parts.as_slice() {
            [os, arch] if valid(os) && valid(arch) => Ok(Platform::new(os, arch, None)),
            [os, arch, variant] if [os, arch, variant].iter().all(|p| valid(p)) => {
                Ok(Platform::new(os, arch, Some(variant)))
            }
            _ => Err(PlatformError::Syntax(text.to_string())),
        }
    }

    /// The Linux platform of a node from its `uname -m`.
    pub fn from_uname_machine(machine: &str) -> Result<Platform, PlatformError> {
        let machine = machine.trim();
        let (arch, variant) = match machine {
            "x86_64" | "amd64" => ("amd64", None),
            "aarch64" | "arm64" => ("arm64", Some("v8")),
            "i386" | "i486" | "i586" | "i686" => ("386", None),
            "ppc64le" => ("ppc64le", None),
            "s390x" => ("s390x", None),
            "riscv64" => ("riscv64", None),
            "loongarch64" => ("loong64", None),
            // armv8l is a 32-bit userland on a 64-bit CPU; armv7l, armv6l, armv5tel...
            m if m.starts_with("armv8") => ("arm", Some("v8")),
            m if m.starts_with("armv7") => ("arm", Some("v7")),
            m if m.starts_with("armv6") => ("arm", Some("v6")),
            m if m.starts_with("armv5") => ("arm", Some("v5")),
            _ => return Err(PlatformError::UnknownMachine(machine.to_string())),
        };
        Ok(Platform::new("linux", arch, variant))
    }

    pub fn os(&self) -> &str {
        &self.os
    }

    pub fn architecture(&self) -> &str {
        &self.architecture
    }

    pub fn variant(&self) -> Option<&str> {
        self.variant.as_deref()
    }

    /// The canonical spelling containerd compares: lower case, `aarch64` as `arm64`, arm64's
    /// `v8` dropped, a bare `arm` as `arm/v7`, `armhf` as `arm/v7`, `armel` as `arm/v6`.
    pub fn normalized(&self) -> Platform {
        let os = self.os.to_ascii_lowercase();
        let os = if os == "macos" { "darwin".into() } else { os };
        let arch = self.architecture.to_ascii_lowercase();
        let variant = self.variant.as_deref().unwrap_or("").to_ascii_lowercase();
        let (arch, variant) = match (arch.as_str(), variant.as_str()) {
            ("i386", _) => ("386", ""),
            ("x86_64" | "x86-64" | "amd64", "v1") => ("amd64", ""),
            ("x86_64" | "x86-64" | "amd64", v) => ("amd64", v),
            ("aarch64" | "arm64", "8" | "v8" | "v8.0") => ("arm64", ""),
            ("aarch64" | "arm64", "9" | "9.0" | "v9.0") => ("arm64", "v9"),
            ("aarch64" | "arm64", v) => ("arm64", v),
            ("armhf", _) => ("arm", "v7"),
            ("armel", _) => ("arm", "v6"),
            ("arm", "" | "7") => ("arm", "v7"),
            ("arm", "5") => ("arm", "v5"),
            ("arm", "6") => ("arm", "v6"),
            ("arm", "8") => ("arm", "v8"),
            (a, v) => (a, v),
        };
        Platform::new(&os, arch, Some(variant))
    }

    /// This platform and every one it can also run, best first (containerd's `platforms.Only`).
    pub fn compatible(&self) -> Vec<Platform> {
        let me = self.normalized();
        let with_arch = |arch: &str, variant: Option<&str>| Platform::new(&me.os, arch, variant);
        match me.architecture.as_str() {
            "amd64" => {
                let mut out = vec![me.clone()];
                // amd64/v3 also runs v2 and v1 (plain amd64), then 386.
                if let Some(level) = version_number(me.variant()) {
                    out.extend(
                        (2..level)
                            .rev()
                            .map(|v| with_arch("amd64", Some(&format!("v{v}")))),
                    );
                    out.push(with_arch("amd64", None));
                }
                out.push(with_arch("386", None));
                out
            }
            "arm" => {
                let mut out = vec![me.clone()];
                if let Some(version) = version_number(me.variant()) {
                    out.extend(
                        (5..version)
                            .rev()
                            .map(|v| with_arch("arm", Some(&format!("v{v}")))),
                    );
                }
                out
            }
            // arm64 (any v8.x/v9.x) runs its own variant and, in 32-bit mode, arm/v8 and below.
            // Finer arm64 minor versions (v8.2, v9.1...) are not ranked between: they are rare
            // in registries.
            "arm64" => {
                let mut out = vec![me.clone()];
                if me.variant.is_some() {
                    out.push(with_arch("arm64", None));
                }
                out.extend(with_arch("arm", Some("v8")).compatible());
                out
            }
            _ => vec![me],
        }
    }

    /// How well `candidate` suits this platform: `Some(0)` for an exact match, a larger rank
    /// for a platform this one can also run, `None` when it cannot run it.
    pub fn rank(&self, candidate: &Platform) -> Option<usize> {
        let candidate = candidate.normalized();
        self.compatible().iter().position(|p| *p == candidate)
    }
}

/// `v7` -> 7, `8` -> 8.
fn version_number(variant: Option<&str>) -> Option<u32> {
    variant?.trim_start_matches('v').parse().ok()
}

impl fmt::Display for Platform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        if let Some(variant) = &self.variant {
            write!(f, "/{variant}")?;
        }
        Ok(())
    }
}

impl FromStr for Platform {
    type Err = PlatformError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Platform::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Platform {
        Platform::parse(text).unwrap()
    }

    #[test]
    fn parses_and_displays_os_arch_variant() {
        assert_eq!(p("linux/amd64").to_string(), "linux/amd64");
        assert_eq!(p("linux/arm/v7").variant(), Some("v7"));
        assert_eq!(p("linux/arm64/v8").to_string(), "linux/arm64/v8");
        assert_eq!(p("windows/amd64").os(), "windows");
        for bad in [
            "",
            "linux",
            "linux/",
            "/amd64",
            "linux/arm/v7/x",
            "linux/am d64",
        ] {
            assert_eq!(
                Platform::parse(bad),
                Err(PlatformError::Syntax(bad.into())),
                "{bad}"
            );
        }
    }

    #[test]
    fn uname_machines_map_to_linux_platforms() {
        let cases = [
            ("x86_64", "linux/amd64"),
            ("aarch64", "linux/arm64/v8"),
            ("arm64", "linux/arm64/v8"),
            ("armv7l", "linux/arm/v7"),
            ("armv6l", "linux/arm/v6"),
            ("armv8l", "linux/arm/v8"),
            ("i686", "linux/386"),
            ("ppc64le", "linux/ppc64le"),
            ("s390x", "linux/s390x"),
            ("riscv64", "linux/riscv64"),
            ("x86_64\n", "linux/amd64"),
        ];
        for (machine, platform) in cases {
            assert_eq!(
                Platform::from_uname_machine(machine).unwrap().to_string(),
                platform,
                "{machine}"
            );
        }
        assert_eq!(
            Platform::from_uname_machine("sparc64"),
            Err(PlatformError::UnknownMachine("sparc64".into()))
        );
    }

    #[test]
    fn arm64_matches_with_or_without_v8() {
        let node = Platform::from_uname_machine("aarch64").unwrap();
        assert_eq!(node.rank(&p("linux/arm64")), Some(0));
        assert_eq!(node.rank(&p("linux/arm64/v8")), Some(0));
        assert_eq!(node.rank(&p("linux/aarch64")), Some(0));
        assert_eq!(p("linux/arm64").rank(&p("linux/arm64/v8")), Some(0));
        // 32-bit ARM images run too, but rank after every arm64 one.
        let v7 = node.rank(&p("linux/arm/v7")).unwrap();
        assert!(v7 > node.rank(&p("linux/arm/v8")).unwrap());
        assert!(node.rank(&p("linux/amd64")).is_none());
        assert!(node.rank(&p("windows/arm64")).is_none());
    }

    #[test]
    fn arm_variants_run_older_ones_only() {
        let v7 = p("linux/arm/v7");
        assert_eq!(v7.rank(&p("linux/arm/v7")), Some(0));
        assert_eq!(v7.rank(&p("linux/arm")), Some(0), "a bare arm is arm/v7");
        assert_eq!(v7.rank(&p("linux/armhf")), Some(0));
        assert_eq!(v7.rank(&p("linux/arm/v6")), Some(1));
        assert_eq!(v7.rank(&p("linux/arm/v5")), Some(2));
        assert_eq!(v7.rank(&p("linux/arm/v8")), None);
        assert_eq!(v7.rank(&p("linux/arm64")), None);
        assert_eq!(p("linux/arm/v6").rank(&p("linux/arm/v7")), None);
    }

    #[test]
    fn amd64_prefers_itself_then_386() {
        let node = p("linux/amd64");
        assert_eq!(node.rank(&p("linux/amd64")), Some(0));
        assert_eq!(node.rank(&p("linux/x86_64")), Some(0));
        assert_eq!(node.rank(&p("linux/amd64/v1")), Some(0));
        assert_eq!(node.rank(&p("linux/386")), Some(1));
        assert_eq!(node.rank(&p("linux/amd64/v2")), None);
        assert_eq!(node.rank(&p("linux/arm64")), None);
        let v3 = p("linux/amd64/v3");
        assert_eq!(v3.rank(&p("linux/amd64/v2")), Some(1));
        assert_eq!(v3.rank(&p("linux/amd64")), Some(2));
        assert_eq!(v3.rank(&p("linux/386")), Some(3));
    }

    #[test]
    fn other_architectures_match_exactly() {
        assert_eq!(p("linux/s390x").rank(&p("linux/s390x")), Some(0));
        assert_eq!(p("linux/ppc64le").rank(&p("linux/ppc64")), None);
        assert_eq!(p("LINUX/S390X").rank(&p("linux/s390x")), Some(0));
    }
}
