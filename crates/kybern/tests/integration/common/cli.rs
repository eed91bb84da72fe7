//! Runs the real kubectl and helm (fetched by scripts/test into .tools/bin, or
//! named by $KUBECTL / $HELM) against a test server.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn tool_path(env: &str, name: &str) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(env) {
        return Some(PathBuf::from(p));
    }
    let local = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.tools/bin")
        .join(name);
    local.exists().then_some(local)
}

/// A command-line client bound to one server's admin kubeconfig.
pub struct Cli {
    bin: PathBuf,
    kubeconfig: PathBuf,
    /// Working directory and HOME for the tool (helm keeps its cache there).
    home: PathBuf,
}

impl Cli {
    /// kubectl for `server`.
    pub fn kubectl(server: &super::Server) -> Self {
        let bin = tool_path("KUBECTL", "kubectl").expect(
            "kubectl not found: run scripts/test (it fetches kubectl into .tools/bin) or set KUBECTL",
        );
        Self::new(bin, server)
    }

    /// helm for `server`.
    pub fn helm(server: &super::Server) -> Self {
        let bin = tool_path("HELM", "helm").expect(
            "helm not found: run scripts/test (it fetches helm into .tools/bin) or set HELM",
        );
        Self::new(bin, server)
    }

    /// kubectl for a `kybern up` cluster.
    pub fn kubectl_for(cluster: &super::node::NodeCluster) -> Self {
        let bin = tool_path("KUBECTL", "kubectl").expect(
            "kubectl not found: run scripts/test (it fetches kubectl into .tools/bin) or set KUBECTL",
        );
        Self::with_kubeconfig(bin, cluster.kubeconfig(), cluster.dir.path())
    }

    /// kubectl for `server` as the holder of a bearer `token` (same server
    /// and CA as the admin's kubeconfig).
    pub fn kubectl_with_token(server: &super::Server, token: &str) -> Self {
        let admin = std::fs::read_to_string(server.kubeconfig()).expect("admin kubeconfig");
        let cut = admin.find("users:").expect("users section");
        let text = format!(
            "{}users:\n- name: kybern-admin\n  user: {{token: {token}}}\n",
            &admin[..cut]
        );
        // Tokens are too long for a file name: name the file by a hash.
        let mut hasher = std::collections::hash_map::DefaultHasher::new();
        std::hash::Hash::hash(token, &mut hasher);
        let tag = std::hash::Hasher::finish(&hasher);
        let path = server.dir.path().join(format!("token-{tag:x}.kubeconfig"));
        std::fs::write(&path, text).expect("write kubeconfig");
        let bin = tool_path("KUBECTL", "kubectl").expect("kubectl not found");
        Self::with_kubeconfig(bin, path, server.dir.path())
    }

    fn new(bin: PathBuf, server: &super::Server) -> Self {
        Self::with_kubeconfig(bin, server.kubeconfig(), server.dir.path())
    }

    fn with_kubeconfig(bin: PathBuf, kubeconfig: PathBuf, dir: &Path) -> Self {
        let home = dir.join("home");
        std::fs::create_dir_all(&home).expect("home dir");
        Cli {
            bin,
            kubeconfig,
            home,
        }
    }

    /// The tool's working directory.
    pub fn home(&self) -> &Path {
        &self.home
    }

    /// Runs the tool with `args`.
    pub fn run(&self, args: &[&str]) -> Output {
        self.run_with_stdin(args, None)
    }

    /// The tool's command with `args`, for callers that spawn it themselves.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .current_dir(&self.home)
            .env("HOME", &self.home)
            .env("XDG_CACHE_HOME", self.home.join(".cache"))
            .env("XDG_CONFIG_HOME", self.home.join(".config"))
            .env("XDG_DATA_HOME", self.home.join(".data"));
        cmd
    }

    /// Runs the tool with `args` on a pseudo-terminal of `cols`x`rows` made
    /// by util-linux `script` (as `kubectl exec -it` needs one); the exit
    /// status is the tool's.
    pub fn run_on_terminal(&self, args: &[&str], cols: u16, rows: u16) -> Output {
        let quote = |s: &str| format!("'{}'", s.replace('\'', "'\\''"));
        let mut line = format!(
            "stty cols {cols} rows {rows}; exec {} --kubeconfig {}",
            quote(&self.bin.to_string_lossy()),
            quote(&self.kubeconfig.to_string_lossy())
        );
        for a in args {
            line.push(' ');
            line.push_str(&quote(a));
        }
        let cmd = self.command(&[]);
        Command::new("script")
            .args(["-qec", &line, "/dev/null"])
            .current_dir(&self.home)
            .envs(cmd.get_envs().filter_map(|(k, v)| Some((k, v?))))
            .stdin(std::process::Stdio::null())
            .output()
            .expect("run script")
    }

    /// Runs the tool with `args`, feeding `stdin`.
    pub fn run_with_stdin(&self, args: &[&str], stdin: Option<&str>) -> Output {
        use std::io::Write;
        let mut child = self
            .command(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run tool");
        if let Some(input) = stdin
            && let Some(mut pipe) = child.stdin.take()
        {
            pipe.write_all(input.as_bytes()).expect("write stdin");
        }
        drop(child.stdin.take());
        child.wait_with_output().expect("wait for tool")
    }

    /// Runs and expects success; returns stdout.
    pub fn ok(&self, args: &[&str]) -> String {
        self.succeeded(args, self.run(args))
    }

    /// Runs with stdin and expects success; returns stdout.
    pub fn ok_stdin(&self, args: &[&str], stdin: &str) -> String {
        self.succeeded(args, self.run_with_stdin(args, Some(stdin)))
    }

    fn succeeded(&self, args: &[&str], out: Output) -> String {
        assert!(
            out.status.success(),
            "{} {args:?} failed: {}",
            self.bin.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs and expects failure; returns stderr.
    pub fn fails(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(!out.status.success(), "{args:?} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }
}
