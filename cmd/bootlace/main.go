package main

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/klauspost/compress/zstd"
	_ "github.com/klauspost/pgzip"
	_ "github.com/spf13/cobra"
	_ "github.com/vbauerster/mpb/v8"
	_ "go.podman.io/image/v5/copy"
	_ "go.podman.io/image/v5/transports/alltransports"
	_ "go.podman.io/storage"
	_ "golang.org/x/sys/unix"
	_ "github.com/diskfs/go-diskfs"
)

func main() {}
