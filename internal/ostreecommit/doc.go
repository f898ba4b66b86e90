// Package ostreecommit writes a directory tree as an ostree commit into a
// bare repository, consuming the tree, without running ostree.
//
// It produces the same commit as
//
//	ostree --repo=REPO commit --branch=REF --tree=dir=TREE --consume \
//	  --no-bindings --fsync=false --subject=S [--body=B] \
//	  --add-metadata-string=K=V... --timestamp=T
//
// run by ostree 2022.7 on the same tree: the same commit checksum and
// byte-identical dirtree, dirmeta and commit objects (the tests compare
// against the host's ostree CLI), with the files hashed in parallel.
//
// What it matches:
//
//   - Content checksums: sha256 over the big-endian-length-prefixed
//     "(uuuusa(ayay))" header (uid, gid, full st_mode, rdev 0, symlink
//     target, xattrs) followed by the file's bytes.
//   - Xattrs as ostree reads them from disk by default: every name the
//     kernel lists (user.*, security.capability, trusted.*, and
//     security.selinux when the host has labels), sorted by name, values
//     raw; zero-length values are skipped, as ostree does.
//   - Ownership and all mode bits (setuid, setgid, sticky) exactly as on
//     disk, for files, symlinks and directories (the tree root's own
//     metadata becomes the root dirmeta).
//   - Dirtree entries sorted in byte order (strcmp), not locale order.
//   - Commit metadata in the given order (ostree keeps the order of
//     --add-metadata-string); with --no-bindings ostree adds no keys of
//     its own. The parent is the commit the branch pointed at, if any;
//     "related" is empty.
//   - --consume: each regular file and symlink is hard-linked as
//     objects/XX/YYY.file when that object is absent, and its staged name
//     unlinked, so no data is copied and the objects keep the staged
//     inodes (link and unlink, not rename: the kernel serializes renames
//     across directories); afterwards the tree, including its root, is
//     removed.
//     Hard links in the tree (one inode under several names) become one
//     object.
//   - The repository afterwards: objects, refs/heads/REF (mode 0644) and
//     .lock (ostree's lock file, held shared during the commit, so a
//     concurrent prune waits); no state/ or tmp/ leftovers. No fsync
//     (--fsync=false): the caller syncs the filesystem once.
//
// What it does not do:
//
//   - Only bare repositories (mode=bare, what `ostree admin init-fs`
//     creates); the tree must be on the repository's filesystem (links,
//     never copies), with no other filesystem mounted inside it.
//   - No SELinux labelling (--selinux-policy): callers that need labels
//     run ostree's own commit instead.
//   - Symlink objects are the staged symlinks linked in, so their mtime
//     is the staged one where ostree would create a new symlink; nothing
//     hashes or checks symlink mtimes. Regular files keep their mtime,
//     as with ostree's consume path.
//   - No ostree.ref-binding or collection bindings, no --generate-sizes,
//     no composefs digest, no detached metadata, no GPG signing, and no
//     min-free-space check (consuming allocates no data blocks).
//   - On an error or cancellation part of the tree may already have been
//     moved into the repository (as with ostree); no ref is written then,
//     and the moved objects are unreferenced until a prune.
//
// Names and symlink targets must be valid UTF-8 and only regular files,
// symlinks and directories are allowed, as ostree requires; anything else
// is an error naming the path.
package ostreecommit
