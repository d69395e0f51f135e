use super::*;

const ID: &str = "sha256:4f2a3b1c9d8e7f60112233445566778899aabbccddeeff00112233445566aa";

fn image(tags: &[&str]) -> ImageInfo {
    ImageInfo {
        id: ID.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        digests: vec!["acme/app@sha256:beef".into()],
        size_bytes: 1,
    }
}

#[test]
fn a_name_without_a_tag_means_latest() {
    assert!(holds(&[image(&["alpine:latest"])], "alpine"));
    assert!(holds(&[image(&["alpine:latest"])], "alpine:latest"));
    assert!(!holds(&[image(&["alpine:3.20"])], "alpine"));
    assert!(!holds(&[image(&["alpine:latest"])], "alpine:3.20"));
}

#[test]
fn docker_hub_names_compare_in_their_familiar_form() {
    let held = [image(&["alpine:3.20", "acme/app:1"])];
    for r in [
        "docker.io/library/alpine:3.20",
        "library/alpine:3.20",
        "index.docker.io/library/alpine:3.20",
        "docker.io/acme/app:1",
    ] {
        assert!(holds(&held, r), "{r}");
    }
    // Another registry is another repository.
    assert!(!holds(&held, "quay.io/alpine:3.20"));
    assert!(!holds(&held, "acme/library/alpine:3.20"));
}

#[test]
fn a_registry_port_is_not_a_tag() {
    let held = [image(&["registry:5000/team/app:latest"])];
    assert!(holds(&held, "registry:5000/team/app"));
    assert_eq!(
        ImageRef::parse("registry:5000/team/app"),
        ImageRef::Tag {
            name: "registry:5000/team/app".into(),
            tag: "latest".into()
        }
    );
}

#[test]
fn ids_match_in_full_or_by_a_long_enough_prefix() {
    let held = [image(&[])];
    assert!(holds(&held, ID));
    assert!(holds(
        &held,
        &ID.to_ascii_uppercase().replace("SHA256", "sha256")
    ));
    assert!(holds(&held, &ID[..7 + MIN_ID_PREFIX]));
    assert!(
        !holds(&held, &ID[..7 + MIN_ID_PREFIX - 1]),
        "too short a prefix is ambiguous"
    );
    assert!(!holds(&held, "sha256:0000000000000000"));
}

#[test]
fn digests_match_repo_digests() {
    let held = [image(&[])];
    assert!(holds(&held, "acme/app@sha256:beef"));
    assert!(holds(&held, "docker.io/acme/app@sha256:BEEF"));
    assert!(!holds(&held, "acme/other@sha256:beef"));
}

#[test]
fn bound_sorts_drops_dangling_names_and_caps_everything() {
    let many: Vec<ImageInfo> = (0..MAX_IMAGES + 5)
        .map(|i| ImageInfo {
            id: format!("sha256:{i:064x}"),
            tags: if i % 2 == 0 {
                vec![format!("app{i}:1"), "<none>:<none>".into()]
            } else {
                Vec::new()
            },
            ..ImageInfo::default()
        })
        .collect();
    let b = bound(many);
    assert_eq!(b.images.len(), MAX_IMAGES);
    assert_eq!(b.images_dropped, 5);
    assert_eq!(b.refs_dropped, (MAX_IMAGES + 5).div_ceil(2));
    // Tagged images first: the dropped ones are untagged.
    assert!(b.images[..(MAX_IMAGES + 5).div_ceil(2)]
        .iter()
        .all(|i| !i.tags.is_empty()));
    // Stable: the same input in another order bounds to the same output.
    let mut again: Vec<ImageInfo> = b.images.clone();
    again.reverse();
    assert_eq!(bound(again).images, b.images);

    let long = ImageInfo {
        id: ID.into(),
        tags: (0..40)
            .map(|i| format!("t:{i}"))
            .chain(["x".repeat(MAX_REF_LEN + 1)])
            .collect(),
        ..ImageInfo::default()
    };
    let b = bound(vec![long]);
    assert_eq!(b.images[0].tags.len(), MAX_REFS_PER_IMAGE);
    assert_eq!(b.refs_dropped, 41 - MAX_REFS_PER_IMAGE);

    let huge: Vec<ImageInfo> = (0..MAX_IMAGES)
        .map(|i| ImageInfo {
            id: format!("sha256:{i:064x}"),
            tags: (0..MAX_REFS_PER_IMAGE)
                .map(|t| format!("{}:{t}", "n".repeat(200)))
                .collect(),
            ..ImageInfo::default()
        })
        .collect();
    let b = bound(huge);
    let bytes: usize = b
        .images
        .iter()
        .map(|i| i.id.len() + i.tags.iter().map(String::len).sum::<usize>())
        .sum();
    assert!(bytes <= MAX_TOTAL_BYTES, "{bytes}");
    assert!(b.images_dropped > 0);
}

#[test]
fn references_name_their_registry_as_docker_reads_them() {
    for (r, want) in [
        ("alpine", Some("docker.io")),
        ("acme/app:1", Some("docker.io")),
        ("docker.io/library/alpine", Some("docker.io")),
        ("index.docker.io/acme/app", Some("docker.io")),
        ("127.0.0.1:5000/weir/pe:v1", Some("127.0.0.1:5000")),
        ("Registry.Local/app@sha256:ab", Some("registry.local")),
        ("localhost/app", Some("localhost")),
        ("localhost:5000/app", Some("localhost:5000")),
        ("sha256:0123456789abcdef", None),
    ] {
        assert_eq!(registry_of(r).as_deref(), want, "{r}");
    }
}

#[test]
fn a_worker_runs_what_it_holds_before_what_it_would_pull() {
    let images = vec![ImageInfo {
        id: "sha256:aa".into(),
        tags: vec!["127.0.0.1:5000/app:1".into()],
        ..Default::default()
    }];
    let regs = vec!["127.0.0.1:5000".to_string()];
    assert_eq!(access(&images, &regs, "127.0.0.1:5000/app:1"), Access::Held);
    assert_eq!(access(&images, &regs, "127.0.0.1:5000/app:2"), Access::Pull);
    assert_eq!(access(&images, &regs, "127.0.0.1:5001/app:2"), Access::None);
    assert_eq!(access(&images, &[], "127.0.0.1:5000/app:2"), Access::None);
    assert_eq!(access(&[], &regs, "sha256:aaaaaaaaaaaaaaaa"), Access::None);
    assert!(Access::Held > Access::Pull && Access::Pull > Access::None);
}

#[test]
fn pull_lists_are_bounded_and_name_the_entry_that_breaks_a_rule() {
    assert!(check_registries(&["registry.local:5000".into(), "[::1]:5000".into()]).is_ok());
    let e = check_registries(&["reg/x".into()]).unwrap_err();
    assert!(e.contains("\"reg/x\"") && e.contains("'/'"), "{e}");
    let e = check_registries(&[String::new()]).unwrap_err();
    assert!(e.contains("1 to 255 bytes"), "{e}");
    let e = check_registries(&["a".repeat(256)]).unwrap_err();
    assert!(e.contains("1 to 255 bytes"), "{e}");
    let many: Vec<String> = (0..17).map(|i| format!("r{i}.local")).collect();
    let e = check_registries(&many).unwrap_err();
    assert!(e.contains("at most 16"), "{e}");
}
