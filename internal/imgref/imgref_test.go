package imgref

import "testing"

func TestParse(t *testing.T) {
	tests := []struct {
		in      string
		want    Ref
		wantErr bool
	}{
		{"docker://quay.io/x/os:latest", Ref{Registry, "quay.io/x/os:latest"}, false},
		{"registry:quay.io/x/os:latest", Ref{Registry, "quay.io/x/os:latest"}, false},
		{"oci:/var/tmp/layout:tag", Ref{OCI, "/var/tmp/layout:tag"}, false},
		{"oci-archive:/tmp/a.tar", Ref{OCIArchive, "/tmp/a.tar"}, false},
		{"docker-archive:/tmp/a.tar", Ref{DockerArchive, "/tmp/a.tar"}, false},
		{"containers-storage:localhost/os", Ref{ContainersStorage, "localhost/os"}, false},
		{"dir:/tmp/d", Ref{Dir, "/tmp/d"}, false},
		{"quay.io/x/os", Ref{}, true},
		{"docker:quay.io/x", Ref{}, true},
		{"ftp:/x", Ref{}, true},
		{"oci:", Ref{}, true},
	}
	for _, tt := range tests {
		got, err := Parse(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("Parse(%q) = %+v, %v; want %+v, err=%v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestOriginAndRef(t *testing.T) {
	tests := []struct {
		ref    Ref
		signed bool
		origin string
		ostree string
	}{
		{Ref{Registry, "quay.io/x/y:tag"}, false, "ostree-unverified-registry:quay.io/x/y:tag", "ostree/container/image/docker_3A__2F__2F_quay_2E_io/x/y_3A_tag"},
		{Ref{Registry, "quay.io/x/y:tag"}, true, "ostree-image-signed:docker://quay.io/x/y:tag", "ostree/container/image/docker_3A__2F__2F_quay_2E_io/x/y_3A_tag"},
		{Ref{OCI, "/var/tmp/os"}, false, "ostree-unverified-image:oci:/var/tmp/os", "ostree/container/image/oci_3A__2F_var/tmp/os"},
		{Ref{Registry, "localhost:5000/my_os"}, false, "ostree-unverified-registry:localhost:5000/my_os", "ostree/container/image/docker_3A__2F__2F_localhost_3A_5000/my__os"},
	}
	for _, tt := range tests {
		if got := tt.ref.Origin(tt.signed); got != tt.origin {
			t.Errorf("%+v.Origin = %q, want %q", tt.ref, got, tt.origin)
		}
		got, err := tt.ref.OstreeRef()
		if err != nil || got != tt.ostree {
			t.Errorf("%+v.OstreeRef = %q, %v; want %q", tt.ref, got, err, tt.ostree)
		}
	}
}

func TestEscapeForRef(t *testing.T) {
	tests := map[string]string{
		"foo":                                   "foo",
		"foo/bar/baz-blah/foo":                  "foo/bar/baz-blah/foo",
		"localhost:5000/foo:latest":             "localhost_3A_5000/foo_3A_latest",
		"/":                                     "_2F_",
		"blah/":                                 "blah_2F_",
		"registry:quay.io/coreos/fedora:latest": "registry_3A_quay_2E_io/coreos/fedora_3A_latest",
	}
	for in, want := range tests {
		if got, err := EscapeForRef(in); err != nil || got != want {
			t.Errorf("EscapeForRef(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := EscapeForRef(""); err == nil {
		t.Error("empty string escaped without error")
	}
}
