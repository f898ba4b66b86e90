package blockdev

import (
	"strings"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

func TestPlanBootcLayout(t *testing.T) {
	type want struct {
		name       string
		start, len uint64 // MiB
	}
	const disk20G = 20 * GiB
	// Usable end of a 20 GiB disk with 512-byte sectors is 33 sectors
	// before the end, so root stops at the last whole MiB before it.
	rootFill := uint64(disk20G/MiB - 1 - 1538)
	tests := []struct {
		name    string
		size    uint64
		ss      uint32
		opts    LayoutOptions
		want    []want
		wantErr string
		kind    errs.Kind
	}{
		{
			name: "default fills the disk",
			size: disk20G, ss: 512,
			want: []want{{"BIOS-BOOT", 1, 1}, {"EFI-SYSTEM", 2, 512}, {"boot", 514, 1024}, {"root", 1538, rootFill}},
		},
		{
			name: "root size",
			size: disk20G, ss: 512, opts: LayoutOptions{RootSize: 4 * GiB},
			want: []want{{"BIOS-BOOT", 1, 1}, {"EFI-SYSTEM", 2, 512}, {"boot", 514, 1024}, {"root", 1538, 4096}},
		},
		{
			name: "no separate boot",
			size: disk20G, ss: 512, opts: LayoutOptions{NoBoot: true},
			want: []want{{"BIOS-BOOT", 1, 1}, {"EFI-SYSTEM", 2, 512}, {"root", 514, disk20G/MiB - 1 - 514}},
		},
		{
			name: "4Kn UEFI only",
			size: disk20G, ss: 4096, opts: LayoutOptions{NoBIOSBoot: true, ESPSize: 256 * MiB},
			want: []want{{"EFI-SYSTEM", 1, 256}, {"boot", 257, 1024}, {"root", 1281, disk20G/MiB - 1 - 1281}},
		},
		{
			name: "4Kn with BIOS boot", size: disk20G, ss: 4096,
			wantErr: "4096-byte logical sectors", kind: errs.Target,
		},
		{
			name: "too small", size: 1 * GiB, ss: 512,
			wantErr: "1024 MiB) is too small", kind: errs.Target,
		},
		{
			name: "root size does not fit", size: 4 * GiB, ss: 512, opts: LayoutOptions{RootSize: 3 * GiB},
			wantErr: "needs 3072 MiB", kind: errs.Target,
		},
		{
			name: "unaligned root size", size: disk20G, ss: 512, opts: LayoutOptions{RootSize: GiB + 512},
			wantErr: "multiples of 1 MiB", kind: errs.Usage,
		},
		{
			name: "just too small", size: (1538 + 256) * MiB, ss: 512,
			wantErr: "leave 255 MiB for root, which needs 256 MiB", kind: errs.Target,
		},
		{
			name: "smallest disk that fits",
			size: (1538+256)*MiB + 64*1024, ss: 512,
			want: []want{{"BIOS-BOOT", 1, 1}, {"EFI-SYSTEM", 2, 512}, {"boot", 514, 1024}, {"root", 1538, 256}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			parts, err := PlanBootcLayout(tc.size, tc.ss, tc.opts)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErr)
				}
				if k := errs.KindOf(err); k != tc.kind {
					t.Errorf("kind = %v, want %v", k, tc.kind)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if len(parts) != len(tc.want) {
				t.Fatalf("got %d partitions, want %d: %+v", len(parts), len(tc.want), parts)
			}
			_, last, _ := UsableRange(tc.size, tc.ss)
			for i, p := range parts {
				w := tc.want[i]
				if p.Number != i+1 || p.Name != w.name || p.Start != w.start*MiB || p.Size != w.len*MiB {
					t.Errorf("partition %d = #%d %s %d+%d MiB, want %s %d+%d MiB", i, p.Number, p.Name, p.Start/MiB, p.Size/MiB, w.name, w.start, w.len)
				}
				if p.Start%Alignment != 0 || p.Size%Alignment != 0 {
					t.Errorf("%s not 1 MiB aligned", p.Name)
				}
				if p.End() > last {
					t.Errorf("%s ends at %d beyond the usable end %d", p.Name, p.End(), last)
				}
			}
			types := map[string]GUID{"BIOS-BOOT": TypeBIOSBoot, "EFI-SYSTEM": TypeESP, "boot": TypeLinuxData, "root": TypeRootX86_64}
			for _, p := range parts {
				if p.Type != types[p.Name] {
					t.Errorf("%s has type %s", p.Name, p.Type)
				}
				if (p.Name == "BIOS-BOOT") != (p.Attributes&AttrLegacyBIOSBootable != 0) {
					t.Errorf("%s attributes %#x", p.Name, p.Attributes)
				}
			}
			// The plan must be writable as is.
			g, _ := newGeometry(tc.size, tc.ss)
			if err := validate(parts, g); err != nil {
				t.Errorf("plan does not validate: %v", err)
			}
		})
	}
}
