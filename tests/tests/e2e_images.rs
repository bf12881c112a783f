//! `skerry image import|ls|rm|pull` and pods that pull from a private registry on 127.0.0.1.

use skerry_tests::images::ImageBuilder;
use skerry_tests::registry::Registry;
use skerry_tests::skerryd::{busybox_pod, column, NodeNet, Options, TestNode, BUSYBOX};

/// The `image ls` row for `repo`:`tag`, if any.
fn listed(ls: &str, repo: &str, tag: &str) -> bool {
    ls.lines().any(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        cols.len() >= 2 && cols[0] == repo && cols[1] == tag
    })
}

#[test]
fn import_list_remove() {
    let node = TestNode::start();
    let dir = node.work.path();
    let oci = dir.join("oci.tar");
    let gz = dir.join("oci.tar.gz");
    let docker = dir.join("docker.tar");
    ImageBuilder::new("skerry-test/oci:1").write_oci(&oci, false).unwrap();
    ImageBuilder::new("skerry-test/ocigz:2").write_oci(&gz, true).unwrap();
    ImageBuilder::new("skerry-test/docker:3").write_docker_archive(&docker, false).unwrap();

    assert!(node.import(&oci).starts_with("imported docker.io/skerry-test/oci:1 (sha256:"));
    assert!(node.import(&gz).starts_with("imported docker.io/skerry-test/ocigz:2 (sha256:"));
    let out = node.import(&docker);
    assert!(out.contains("docker.io/skerry-test/docker:3"), "{out}");
    // stdin works too, and importing twice is fine.
    let out = node.skerry_stdin(&["image", "import", "-"], &std::fs::read(&oci).unwrap());
    assert_eq!(out.code, 0, "{out}");

    let ls = node.skerry_ok(&["image", "ls"]);
    let header: Vec<&str> = ls.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["IMAGE", "TAG", "IMAGE", "ID", "SIZE"], "{ls}");
    for (repo, tag) in [
        ("docker.io/skerry-test/oci", "1"),
        ("docker.io/skerry-test/ocigz", "2"),
        ("docker.io/skerry-test/docker", "3"),
    ] {
        assert!(listed(&ls, repo, tag), "image ls lists {repo}:{tag}:\n{ls}");
    }
    // IMAGE ID: a short hex digest, the same for the same image from plain and gzipped OCI archives.
    let oci_id = column(&ls, "docker.io/skerry-test/oci", "IMAGE ID").unwrap();
    assert!(oci_id.len() == 12 && oci_id.chars().all(|c| c.is_ascii_hexdigit()), "{ls}");
    assert_eq!(column(&ls, "docker.io/skerry-test/ocigz", "IMAGE ID"), Some(oci_id), "{ls}");

    // Every format runs.
    for (pod, image) in
        [("from-oci", "skerry-test/oci:1"), ("from-gz", "skerry-test/ocigz:2"), ("from-docker", "skerry-test/docker:3")]
    {
        node.apply(&busybox_pod(pod, "Never", &["echo", "ran"]).replace(BUSYBOX, image));
    }
    for pod in ["from-oci", "from-gz", "from-docker"] {
        node.wait_pod(pod, "Succeeded", |p| p["status"]["phase"] == "Succeeded");
        assert_eq!(node.skerry_ok(&["logs", pod]), "ran\n");
    }

    node.skerry_ok(&["image", "rm", "skerry-test/docker:3"]);
    let ls = node.skerry_ok(&["image", "ls"]);
    assert!(!listed(&ls, "docker.io/skerry-test/docker", "3"), "removed:\n{ls}");
    assert!(listed(&ls, "docker.io/skerry-test/oci", "1"), "others stay:\n{ls}");
    let out = node.skerry(&["image", "rm", "skerry-test/never-there:1"]);
    assert_eq!(out.code, 1, "removing a missing image fails:\n{out}");
    let out = node.skerry(&["image", "import", "/no/such/file.tar"]);
    assert_eq!(out.code, 1, "{out}");
    let out = node.skerry_stdin(&["image", "import", "-"], b"this is not a tar archive");
    assert_eq!(out.code, 1, "a corrupt archive fails:\n{out}");
}

#[test]
fn pull_from_a_local_registry() {
    // skerryd pulls from inside its node's namespace: the registry listens on that namespace's loopback.
    let net = NodeNet::create();
    let registry = Registry::start_in(&net);
    let node = TestNode::start_opts(Options {
        net: Some(net),
        ..Options::with_args(&["--insecure-registry", registry.addr()])
    });
    let archive = node.work.path().join("pushed.tar");
    ImageBuilder::new("skerry-test/pushed:1")
        .file("/hello.txt", b"from the registry\n")
        .write_oci(&archive, false)
        .unwrap();
    let pulled = registry.push_oci_archive(&archive, "pushed:1");
    let auto = registry.push_oci_archive(&archive, "auto:1");

    let out = node.skerry(&["image", "pull", &pulled]);
    assert_eq!(out.code, 0, "{out}\nskerryd log:\n{}", node.skerryd.log_tail(20));
    assert!(out.stdout.contains(&pulled), "pull names the image:\n{out}");
    assert!(out.stdout.lines().count() >= 2, "pull shows progress:\n{out}");
    let ls = node.skerry_ok(&["image", "ls"]);
    assert!(listed(&ls, &format!("{}/pushed", registry.addr()), "1"), "{ls}");

    // A pulled image runs.
    node.apply(&busybox_pod("pulled", "Never", &["cat", "/hello.txt"]).replace(BUSYBOX, &pulled));
    node.wait_pod("pulled", "Succeeded", |p| p["status"]["phase"] == "Succeeded");
    assert_eq!(node.skerry_ok(&["logs", "pulled"]), "from the registry\n");

    // A missing tag: the registry's reason, exit 1.
    let out = node.skerry(&["image", "pull", &format!("{}/pushed:nope", registry.addr())]);
    assert_eq!(out.code, 1, "{out}");
    let err = out.stderr.to_lowercase();
    assert!(err.contains("manifest unknown") || err.contains("not found"), "the registry's reason is shown:\n{out}");

    // imagePullPolicy Always pulls an image that is not on the node yet.
    let yaml = busybox_pod("auto", "Always", &["sh", "-c", "cat /hello.txt; exec sleep 3600"])
        .replace(BUSYBOX, &auto)
        .replace("imagePullPolicy: Never", "imagePullPolicy: Always");
    node.apply(&yaml);
    node.wait_running("auto");
    let d = node.skerry_ok(&["describe", "pod", "auto"]);
    assert!(d.contains(&format!("Pulling image \"{auto}\"")), "{d}");
    assert!(d.contains(&format!("Successfully pulled image \"{auto}\"")), "{d}");
    node.wait_output(&["logs", "auto"], "shows the file", |o| o.stdout == "from the registry\n");
}

/// A full disk is bad input like any other: the import fails with a message that says what to
/// do, and nothing changes. The data dir sits on a 1 MiB tmpfs; the archive is larger.
#[test]
fn import_onto_a_full_disk_fails_clearly_and_changes_nothing() {
    let node = TestNode::start_opts(Options { data_tmpfs: Some(1024 * 1024), ..Default::default() });
    let archive = node.work.path().join("big.tar");
    // Uncompressed busybox plus 2 MiB of incompressible-enough filler: well over the tmpfs.
    let filler: Vec<u8> = (0..2 * 1024 * 1024u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    ImageBuilder::new("skerry-test/big:1").file("/filler.bin", &filler).write_oci(&archive, false).unwrap();

    let out = node.skerry(&["image", "import", &archive.display().to_string()]);
    assert_eq!(out.code, 1, "{out}");
    assert!(out.stderr.contains("no space left"), "the error names the cause:\n{out}");
    assert!(out.stderr.contains("free some space"), "the error says what to do:\n{out}");
    let ls = node.skerry_ok(&["image", "ls"]);
    assert!(!listed(&ls, "docker.io/skerry-test/big", "1"), "nothing was imported:\n{ls}");
    // The daemon is fine afterwards: the half-written upload was removed.
    let free = node.skerry_ok(&["get", "ns"]);
    assert!(free.contains("default"), "{free}");
}
