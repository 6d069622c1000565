//! Kernels as a release names them.

use anyhow::Result;

/// A kernel as the command line and the build plan name it: `RELEASE` (as
/// `uname -r` prints it) or `RELEASE=VERSION` (pinned to its headers package
/// version). Returns the release and the version, if one is given.
pub fn parse_pin(pin: &str) -> Result<(&str, Option<&str>)> {
    let Some((release, version)) = pin.split_once('=') else {
        if pin.is_empty() {
            crate::report::usage_bail!(
                "an empty kernel release: name it as RELEASE or RELEASE=VERSION"
            );
        }
        return Ok((pin, None));
    };
    if release.is_empty() || version.is_empty() || version.contains('=') {
        crate::report::usage_bail!("{pin:?}: name a kernel as RELEASE or RELEASE=VERSION");
    }
    Ok((release, Some(version)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pin_is_a_release_with_or_without_its_version() {
        assert_eq!(parse_pin("6.1.0-9-amd64").unwrap(), ("6.1.0-9-amd64", None));
        assert_eq!(
            parse_pin("6.1.0-9-amd64=6.1.27-1").unwrap(),
            ("6.1.0-9-amd64", Some("6.1.27-1"))
        );
    }

    #[test]
    fn a_pin_without_a_release_or_a_version_is_a_usage_error() {
        for bad in [
            "",
            "=6.1.27-1",
            "6.1.0-9-amd64=",
            "6.1.0-9-amd64=6.1=1",
            "=",
        ] {
            let err = parse_pin(bad).unwrap_err();
            assert_eq!(crate::report::status(&err), 2, "{bad:?}: {err}");
            assert!(
                err.to_string().contains("RELEASE or RELEASE=VERSION"),
                "{bad:?}: {err}"
            );
        }
    }
}
