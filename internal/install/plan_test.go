package install

import (
	"reflect"
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
	"github.com/bootlace/bootlace/internal/fetch"
	"github.com/bootlace/bootlace/internal/imgref"
	"github.com/bootlace/bootlace/internal/installconfig"
	imgspecv1 "github.com/opencontainers/image-spec/specs-go/v1"
)

func testFacts() *imageFacts {
	return &imageFacts{
		im: &fetch.Image{Source: imgref.Ref{Transport: imgref.OCIArchive, Name: "/x.tar"},
			Config: &imgspecv1.Image{Platform: imgspecv1.Platform{Architecture: "amd64"}}},
		kernel: "6.1.0",
		cfg:    &installconfig.Config{Kargs: []string{"console=ttyS0", "quiet"}, Stateroot: "fromconfig"},
		kargsD: []string{"kd=1"},
	}
}

func TestComputePlan(t *testing.T) {
	rootT := &target{rootFSType: "ext4", rootKargs: []string{"root=UUID=r", "rw", "boot=UUID=b"}, bootSeparate: true, bootMountSpec: "UUID=b"}
	tests := []struct {
		name      string
		opts      Options
		mod       func(*imageFacts)
		tgt       *target
		wantKargs []string
		stateroot string
		selinux   string
		label     bool
		bl        string
		wantErr   errs.Kind
	}{
		{name: "order", opts: Options{Kargs: []string{"cli=1"}},
			wantKargs: []string{"root=UUID=r", "rw", "boot=UUID=b", "console=ttyS0", "quiet", "kd=1", "cli=1"},
			stateroot: "fromconfig", selinux: "disabled", bl: "grub"},
		{name: "deletes and cli stateroot", opts: Options{KargDeletes: []string{"quiet", "kd"}, Stateroot: "cli"},
			wantKargs: []string{"root=UUID=r", "rw", "boot=UUID=b", "console=ttyS0"},
			stateroot: "cli", selinux: "disabled", bl: "grub"},
		{name: "image policy labels", mod: func(f *imageFacts) { f.selinux = installconfig.Policy{Enabled: true, Type: "targeted"} },
			wantKargs: []string{"root=UUID=r", "rw", "boot=UUID=b", "console=ttyS0", "quiet", "kd=1"},
			stateroot: "fromconfig", selinux: "enabled", label: true, bl: "grub"},
		{name: "disable-selinux", opts: Options{DisableSELinux: true}, mod: func(f *imageFacts) { f.selinux = installconfig.Policy{Enabled: true} },
			wantKargs: []string{"root=UUID=r", "rw", "boot=UUID=b", "selinux=0", "console=ttyS0", "quiet", "kd=1"},
			stateroot: "fromconfig", selinux: "force-target-disabled", bl: "grub"},
		{name: "config bootloader none", mod: func(f *imageFacts) { f.cfg.Bootloader = "none"; f.cfg.Stateroot = "" },
			wantKargs: []string{"root=UUID=r", "rw", "boot=UUID=b", "console=ttyS0", "quiet", "kd=1"},
			stateroot: "default", selinux: "disabled", bl: "none"},
		{name: "verity on xfs refused", mod: func(f *imageFacts) {
			f.prepareRoot = &installconfig.PrepareRoot{Path: "/usr/lib/ostree/prepare-root.conf", Composefs: installconfig.Yes, ComposefsVerity: true}
		}, tgt: &target{rootFSType: "xfs"}, wantErr: errs.Image},
		{name: "verity on ext4 with the feature", mod: func(f *imageFacts) {
			f.prepareRoot = &installconfig.PrepareRoot{Composefs: installconfig.Yes, ComposefsVerity: true}
		}, tgt: &target{rootFSType: "ext4", rootVerity: true}, wantKargs: []string{"console=ttyS0", "quiet", "kd=1"},
			stateroot: "fromconfig", selinux: "disabled", bl: "grub"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testFacts()
			if tt.mod != nil {
				tt.mod(f)
			}
			tgt := tt.tgt
			if tgt == nil {
				tgt = rootT
			}
			opts := tt.opts
			opts.Source = f.im.Source
			p, err := computePlan("to-filesystem", opts, f, tgt, nil, false, nil, "")
			if tt.wantErr != errs.Internal || err != nil {
				if errs.KindOf(err) != tt.wantErr || err == nil {
					t.Fatalf("err %v, want kind %v", err, tt.wantErr)
				}
				return
			}
			if !reflect.DeepEqual(p.Kargs, tt.wantKargs) {
				t.Errorf("kargs %q\nwant  %q", p.Kargs, tt.wantKargs)
			}
			if p.Stateroot != tt.stateroot || p.SELinux.State != tt.selinux || p.SELinux.Label != tt.label || p.Bootloader.Backend != tt.bl {
				t.Errorf("stateroot %q selinux %+v bootloader %q", p.Stateroot, p.SELinux, p.Bootloader.Backend)
			}
			if p.Version != PlanVersion || p.Image.Origin != "ostree-unverified-registry:/x.tar" {
				t.Errorf("plan header %+v", p.Image)
			}
		})
	}
}

// TestPlanReplace: the plan says how an existing system is replaced and
// where the root kernel arguments came from.
func TestPlanReplace(t *testing.T) {
	tests := []struct {
		name string
		tgt  *target
		want PlanTarget
	}{
		{name: "empty target", tgt: &target{rootFSType: "ext4", rootKargs: []string{"root=UUID=r", "rw"}},
			want: PlanTarget{RootFS: "ext4", RootMountSpec: "UUID=r", RootKargsFrom: "root-filesystem"}},
		{name: "to-existing-root on the booted root", tgt: &target{physRoot: "/target", rootFSType: "xfs", rootKargs: []string{"root=/dev/vg/root", "rd.lvm.lv=vg/root", "rw"},
			rootKargsFrom: rootKargsFromCmdline, replace: ReplaceAlongside, bootedRoot: true, cleanup: true},
			want: PlanTarget{Root: "/target", RootFS: "xfs", RootMountSpec: "/dev/vg/root", RootKargsFrom: "kernel-cmdline", Replace: "alongside", BootedRoot: true, Cleanup: true}},
		{name: "wipe", tgt: &target{physRoot: "/mnt", rootFSType: "ext4", rootKargs: []string{"root=UUID=r", "rw"}, rootKargsFrom: rootKargsFromFS, replace: ReplaceWipe},
			want: PlanTarget{Root: "/mnt", RootFS: "ext4", RootMountSpec: "UUID=r", RootKargsFrom: "root-filesystem", Replace: "wipe"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := testFacts()
			p, err := computePlan("to-existing-root", Options{Source: f.im.Source}, f, tt.tgt, nil, false, nil, "")
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(p.Target, tt.want) {
				t.Errorf("target %+v\nwant   %+v", p.Target, tt.want)
			}
			if !reflect.DeepEqual(p.Kargs[:len(tt.tgt.rootKargs)], tt.tgt.rootKargs) {
				t.Errorf("kargs %q do not start with the root setup %q", p.Kargs, tt.tgt.rootKargs)
			}
		})
	}
}
