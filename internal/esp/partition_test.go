package esp

import (
	"bytes"
	"context"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bootlace/bootlace/internal/blockdev"
)

// TestOnLoopPartition formats the ESP of a bootc layout through its
// partition node, as an install does, and checks the image afterwards.
func TestOnLoopPartition(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loop devices need root")
	}
	needTool(t, "fsck.vfat", "dosfstools")
	needTool(t, "mtype", "mtools")
	const size = 3 << 30
	img := sparseFile(t, size)
	l, err := blockdev.AttachLoop(context.Background(), img)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := l.Detach(); err != nil {
			t.Error(err)
		}
	}()
	parts, err := blockdev.PlanBootcLayout(size, 512, blockdev.LayoutOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if err := blockdev.WriteGPT(l.Path(), parts, blockdev.GUID{}); err != nil {
		t.Fatal(err)
	}
	if err := blockdev.AddPartitions(l.Path(), parts); err != nil {
		t.Fatal(err)
	}
	espPart := parts[1]
	dev := blockdev.PartitionPath(l.Path(), espPart.Number)

	start := time.Now()
	id, err := Format(dev, 0, DefaultLabel)
	if err != nil {
		t.Fatal(err)
	}
	efi := randomBytes(t, 1<<20)
	if err := WriteFiles(dev, []File{{"EFI/BOOT/BOOTX64.EFI", efi}, {"EFI/BOOT/grub.cfg", []byte("configfile x\n")}}); err != nil {
		t.Fatal(err)
	}
	t.Logf("format + write of a %d MiB ESP on %s: %v (volume ID %s)", espPart.Size>>20, dev, time.Since(start), id)
	run(t, "fsck.vfat", "-n", dev)
	// blkid is what initramfs and fstab use to find the ESP.
	blk := run(t, "blkid", "-p", "-o", "export", dev)
	for _, want := range []string{"TYPE=vfat", "VERSION=FAT32", "LABEL=EFI-SYSTEM", "UUID=" + id} {
		if !strings.Contains(blk, want+"\n") {
			t.Errorf("blkid lacks %s:\n%s", want, blk)
		}
	}
	if err := l.Detach(); err != nil {
		t.Fatal(err)
	}

	// Read the ESP out of the image file at its partition offset.
	region := img + "@@" + itoa(espPart.Start)
	if got := []byte(run(t, "mtype", "-i", region, "::EFI/BOOT/BOOTX64.EFI")); !bytes.Equal(got, efi) {
		t.Error("BOOTX64.EFI differs when read back by mtype")
	}
	if got, err := ReadFileAt(img, espPart.Start, "EFI/BOOT/grub.cfg"); err != nil || string(got) != "configfile x\n" {
		t.Errorf("ReadFileAt = %q, %v", got, err)
	}
}

func itoa(v uint64) string { return strconv.FormatUint(v, 10) }
