package hostenv

import (
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// podman431 is what podman 4.3.1 writes for a privileged container.
const podman431 = `engine="podman-4.3.1"
name="jovial_almeida"
id="ba0ed2550b0fc80660a6f931ffff43630e3233ea830cfa72d9ca0c51fec0dfbf"
image="localhost/bootlace/fixture:bookworm"
imageid="8598d57defc1b0e6ce2278a5a6911addd4037899e159e15b74037321891916d5"
rootless=0
`

func TestParseContainerEnv(t *testing.T) {
	tests := []struct {
		name    string
		in      string
		want    *ContainerEnv
		wantErr string
	}{
		{"podman 4.3.1 privileged", podman431, &ContainerEnv{Engine: "podman-4.3.1", Name: "jovial_almeida",
			ID: "ba0ed2550b0fc80660a6f931ffff43630e3233ea830cfa72d9ca0c51fec0dfbf", Image: "localhost/bootlace/fixture:bookworm",
			ImageID: "8598d57defc1b0e6ce2278a5a6911addd4037899e159e15b74037321891916d5"}, ""},
		{"graph root mounted, rootless", "engine=\"podman-5.0.0\"\nrootless=1\ngraphRootMounted=1\n",
			&ContainerEnv{Engine: "podman-5.0.0", Rootless: true, GraphRootMounted: true}, ""},
		{"unprivileged podman writes nothing", "", &ContainerEnv{}, ""},
		{"unknown keys kept", "image=\"quay.io/x/os:1\"\nfuture=\"yes\"\nbare=word\n",
			&ContainerEnv{Image: "quay.io/x/os:1", Extra: map[string]string{"future": "yes", "bare": "word"}}, ""},
		{"blank lines, comments, CRLF, spaces", "# written by hand\r\n\r\n  name = \"a b\"  \r\n",
			&ContainerEnv{Name: "a b"}, ""},
		{"escapes in quoted values", `name="a\"b\\c"`, &ContainerEnv{Name: `a"b\c`}, ""},
		{"value with =", `image="x/y:z=1"`, &ContainerEnv{Image: "x/y:z=1"}, ""},
		{"no equals", "engine\n", nil, "line 1"},
		{"empty key", "=x\n", nil, "line 1"},
		{"unterminated quote", "name=\"x\n", nil, "line 1: value of name"},
		{"bad flag", "ok=1\nrootless=maybe\n", nil, "line 2: value of rootless"},
		{"too big", strings.Repeat("#", maxContainerEnv+1), nil, "more than"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := ParseContainerEnv([]byte(tc.in))
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestEmpty(t *testing.T) {
	e, _ := ParseContainerEnv(nil)
	if !e.Empty() {
		t.Error("an empty file should parse as Empty")
	}
	e, _ = ParseContainerEnv([]byte(podman431))
	if e.Empty() {
		t.Error("podman's file should not be Empty")
	}
}

// FuzzParseContainerEnv: any input either parses or fails cleanly, and
// what parses survives being written back in podman's format.
func FuzzParseContainerEnv(f *testing.F) {
	f.Add([]byte(podman431))
	f.Add([]byte("rootless=1\ngraphRootMounted=1\n"))
	f.Add([]byte("a=\"\\x00\"\n#c\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		env, err := ParseContainerEnv(data)
		if err != nil {
			return
		}
		var b strings.Builder
		for k, v := range map[string]string{"engine": env.Engine, "name": env.Name, "id": env.ID, "image": env.Image, "imageid": env.ImageID} {
			b.WriteString(k + "=" + strconv.Quote(v) + "\n")
		}
		again, err := ParseContainerEnv([]byte(b.String()))
		if err != nil {
			t.Fatalf("re-parsing %q: %v", b.String(), err)
		}
		if again.Engine != env.Engine || again.Name != env.Name || again.ID != env.ID || again.Image != env.Image || again.ImageID != env.ImageID {
			t.Fatalf("round trip changed %+v into %+v", env, again)
		}
	})
}
