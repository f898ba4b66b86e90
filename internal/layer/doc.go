// Package layer applies OCI image layers (tar streams) in order into a staged
// root directory, the "assemble" phase of bootlace.
//
// Confinement. Every path is resolved by the kernel: the parent directory of
// an entry is opened with openat2(RESOLVE_IN_ROOT|RESOLVE_NO_MAGICLINKS)
// relative to the root's file descriptor, and the final component is then
// handled with *at system calls that never follow it (O_NOFOLLOW, O_EXCL,
// AT_SYMLINK_NOFOLLOW, linkat without AT_SYMLINK_FOLLOW). Absolute names,
// symlinks pointing to "/" or "../..", and symlinks left by earlier layers
// therefore resolve inside the root, and a symlink in the final position is
// replaced rather than written through. Names containing "..", NUL, a
// component over 255 bytes or a path over 4096 bytes are refused: no
// legitimate image builder emits them.
//
// Whiteouts follow the OCI layer spec: ".wh.NAME" removes NAME and
// ".wh..wh..opq" the contents of its directory, from lower layers only. The
// applier records which paths the current layer created, so the result is the
// same whether a whiteout comes before or after a same-named entry of its own
// layer. Other ".wh..wh." names are aufs metadata and are ignored.
//
// Device nodes, FIFOs and sockets cannot be stored in an ostree commit, and
// the deployed system gets /dev from devtmpfs anyway: they are dropped and
// reported through Options.Warn with their path, never created. Xattrs in the
// trusted.overlay. and user.overlay. namespaces are dropped with a warning
// too: they would change the tree's meaning if it were ever mounted as an
// overlayfs layer.
//
// What is deliberately not done: mtimes are not restored (ostree ignores
// them), nothing is fsynced (the caller syncs the filesystem once), and
// regular files are written with plain write(2) from one reused buffer. A
// small cache of open directory descriptors serves consecutive entries of the
// same directories, so a typical file costs openat, write, close and, only
// when ownership or special mode bits require it, fchown and fchmod.
package layer
