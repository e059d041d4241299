// SPDX-License-Identifier: MIT
//! The rtpmgrctl command line, without a daemon.

use std::process::Command;

fn ctl() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rtpmgrctl"))
}

#[test]
fn help_lists_the_commands() {
    let out = ctl().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for cmd in ["status [--json]", "reload", "ping", "--socket PATH"] {
        assert!(text.contains(cmd), "{cmd} missing from:\n{text}");
    }
}

#[test]
fn unknown_command_fails_with_usage() {
    let out = ctl().arg("stats").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown command \"stats\""));
}

#[test]
fn missing_daemon_names_the_socket() {
    let sock = std::env::temp_dir().join(format!("rtpmgrctl-none-{}.sock", std::process::id()));
    let out = ctl().arg("--socket").arg(&sock).arg("ping").output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot connect to {}", sock.display())), "{err}");
}

#[test]
fn socket_from_the_environment() {
    let sock = std::env::temp_dir().join(format!("rtpmgrctl-env-{}.sock", std::process::id()));
    let out = ctl().env("RTPMGR_CONTROL_SOCKET", &sock).arg("status").output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains(&sock.display().to_string()));
}
