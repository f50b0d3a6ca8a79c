//! The Debian package that `cargo deb` builds (target/debian/redq_*.deb):
//! its files, its conffile, its maintainer scripts (the `redq` system user,
//! the service left disabled), `systemd-analyze verify` of the unit it
//! installs, and `lintian` without errors.
//!
//! It skips, saying why, when there is no package or a tool is missing;
//! `.ci/run` builds the package and sets `REDQ_REQUIRE_DEB=1`, so there a
//! skip is a failure. Needs no Redis.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The newest `target/debian/redq_*.deb`, if any.
fn package() -> Option<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/debian");
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("redq_") && n.ends_with(".deb"))
        })
        .max_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok())
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Whether to go on: false (after saying why) when something is missing
/// and the package is not required.
fn ready(what: &str, ok: bool) -> bool {
    if ok {
        return true;
    }
    assert!(
        std::env::var_os("REDQ_REQUIRE_DEB").is_none(),
        "REDQ_REQUIRE_DEB is set but {what}"
    );
    eprintln!("SKIPPED: {what} (build it with `cargo deb`; .ci/run does)");
    false
}

fn run(cmd: &mut Command) -> (bool, String) {
    let o = cmd.output().unwrap_or_else(|e| panic!("{cmd:?}: {e}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    (o.status.success(), text)
}

#[test]
fn the_debian_package_installs_the_binary_the_unit_the_config_and_the_user() {
    let Some(deb) = package() else {
        ready("there is no target/debian/redq_*.deb", false);
        return;
    };
    if !ready("dpkg-deb is not installed", have("dpkg-deb")) {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let (ok, out) = run(Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(root.path()));
    assert!(ok, "dpkg-deb -x: {out}");
    let r = root.path();
    for (file, mode) in [
        ("usr/bin/redq", 0o755),
        ("etc/redq/workers.toml", 0o644),
        ("usr/share/doc/redq/README.md", 0o644),
        ("usr/share/doc/redq/docs/operating.md", 0o644),
        ("usr/share/doc/redq/copyright", 0o644),
    ] {
        let m = std::fs::metadata(r.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(m.permissions().mode() & 0o777, mode, "{file}");
    }
    let unit = [
        "lib/systemd/system/redq.service",
        "usr/lib/systemd/system/redq.service",
    ]
    .iter()
    .map(|u| r.join(u))
    .find(|u| u.exists())
    .expect("the package installs redq.service under /lib/systemd/system");
    let text = std::fs::read_to_string(&unit).unwrap();
    assert!(
        text.contains("ExecStart=/usr/bin/redq run --config /etc/redq/workers.toml"),
        "the unit runs the packaged binary on the packaged config"
    );
    assert!(text.contains("User=redq"));
    let example = std::fs::read_to_string(r.join("etc/redq/workers.toml")).unwrap();
    let repo = include_str!("../workers.toml");
    assert_eq!(
        example, repo,
        "/etc/redq/workers.toml is the repository's example"
    );

    // The packaged binary runs, and the example is a valid configuration.
    let (ok, out) = run(Command::new(r.join("usr/bin/redq")).arg("--version"));
    assert!(ok && out.contains(env!("CARGO_PKG_VERSION")), "{out}");

    // Control data: the conffile, the user, the service left disabled.
    let control = root.path().join("DEBIAN");
    let (ok, out) = run(Command::new("dpkg-deb").arg("-e").arg(&deb).arg(&control));
    assert!(ok, "dpkg-deb -e: {out}");
    let conffiles = std::fs::read_to_string(control.join("conffiles")).unwrap();
    assert!(
        conffiles.lines().any(|l| l == "/etc/redq/workers.toml"),
        "{conffiles}"
    );
    let postinst = std::fs::read_to_string(control.join("postinst")).unwrap();
    assert!(
        postinst.contains("adduser --system --group") && postinst.contains(" redq"),
        "postinst creates the redq system user:\n{postinst}"
    );
    let code: Vec<&str> = postinst
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    // Enabled again on upgrade only if the operator had enabled it.
    let reenables = code.iter().any(|l| l.contains("deb-systemd-helper enable"));
    assert!(
        !code
            .iter()
            .any(|l| l.contains("systemctl enable") || l.contains("deb-systemd-invoke start"))
            && (!reenables || postinst.contains("was-enabled")),
        "the service is left disabled and stopped until configured:\n{postinst}"
    );
    let fields = std::fs::read_to_string(control.join("control")).unwrap();
    assert!(
        fields.contains("Depends:") && fields.contains("adduser"),
        "{fields}"
    );

    // systemd reads the installed unit. `verify` also checks that each
    // Exec program exists on this host, where the package is unpacked, not
    // installed: the copy it reads runs the unpacked binary instead (whose
    // place in the package is checked above); every other line is the
    // package's.
    if ready("systemd-analyze is not installed", have("systemd-analyze")) {
        let units = tempfile::tempdir().unwrap();
        let copy = units.path().join("redq.service");
        let exec = r.join("usr/bin/redq");
        std::fs::write(
            &copy,
            text.replace("/usr/bin/redq", &exec.display().to_string()),
        )
        .unwrap();
        let (ok, out) = run(Command::new("systemd-analyze")
            .args(["verify", "--man=no"])
            .arg(&copy));
        assert!(ok, "systemd-analyze verify of the packaged unit:\n{out}");
    }

    if ready("lintian is not installed", have("lintian")) {
        let (_, out) = run(Command::new("lintian")
            .args(["--tag-display-limit", "0", "--fail-on", "error"])
            .arg(&deb));
        let errors: Vec<&str> = out.lines().filter(|l| l.starts_with("E: ")).collect();
        assert!(errors.is_empty(), "lintian reports errors:\n{out}");
        eprintln!("lintian:\n{out}");
    }
}
