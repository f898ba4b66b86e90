package installconfig

import (
	"testing"

	"github.com/bootlace/bootlace/internal/errs"
)

func TestSELinux(t *testing.T) {
	tests := []struct {
		name  string
		files map[string]string
		want  Policy
	}{
		{"no config", nil, Policy{}},
		{
			"enforcing with policy",
			map[string]string{
				"etc/selinux/config":                    "# This file controls...\nSELINUX=enforcing\nSELINUXTYPE=targeted\n",
				"etc/selinux/targeted/policy/policy.33": "",
			},
			Policy{Enabled: true, Mode: "enforcing", Type: "targeted"},
		},
		{
			"usr/etc in a staged ostree tree, quoted values",
			map[string]string{
				"usr/etc/selinux/config":                   "SELINUX=\"permissive\"\nSELINUXTYPE='default'\n",
				"usr/etc/selinux/default/policy/policy.33": "",
			},
			Policy{Enabled: true, Mode: "permissive", Type: "default"},
		},
		{
			"config without policy",
			map[string]string{"etc/selinux/config": "SELINUX=enforcing\nSELINUXTYPE=targeted\n"},
			Policy{Mode: "enforcing", Type: "targeted"},
		},
		{
			"disabled",
			map[string]string{
				"etc/selinux/config":           "SELINUX=disabled\nSELINUXTYPE=targeted\n",
				"etc/selinux/targeted/policy/": "",
			},
			Policy{Mode: "disabled", Type: "targeted"},
		},
		{
			"etc wins over usr/etc",
			map[string]string{
				"etc/selinux/config":               "SELINUX=permissive\n",
				"usr/etc/selinux/config":           "SELINUX=enforcing\nSELINUXTYPE=targeted\n",
				"usr/etc/selinux/targeted/policy/": "",
			},
			Policy{Mode: "permissive"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := SELinux(newTree(t, tt.files))
			if err != nil {
				t.Fatal(err)
			}
			if got != tt.want {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestSELinuxErrors(t *testing.T) {
	for name, content := range map[string]string{
		"bad mode": "SELINUX=on\n",
		"bad type": "SELINUX=enforcing\nSELINUXTYPE=../../x\n",
	} {
		t.Run(name, func(t *testing.T) {
			_, err := SELinux(newTree(t, map[string]string{"etc/selinux/config": content}))
			if errs.KindOf(err) != errs.Image {
				t.Errorf("err = %v, want image error", err)
			}
		})
	}
}
