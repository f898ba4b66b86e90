package installconfig

import (
	"path"
	"slices"
	"strings"

	"github.com/bootlace/bootlace/internal/errs"
)

// KargsDDir holds the image's kernel argument drop-ins.
const KargsDDir = "usr/lib/bootc/kargs.d"

var kargsDSchema = map[string]field{
	"kargs":               {kind: kindStringArray},
	"match-architectures": {kind: kindStringArray},
}

const opKargsD = "reading kargs.d"

// LoadKargsD returns the kernel arguments of the image's kargs.d drop-ins
// that apply to arch (a GOARCH or Rust name), concatenated in file-name
// order. Each file must have a kargs array; unknown keys are errors.
func LoadKargsD(root, arch string) ([]string, error) {
	t, err := openTree(root)
	if err != nil {
		return nil, err
	}
	defer t.Close()
	rdir, err := t.resolve(KargsDDir)
	if notExist(err) {
		return nil, nil
	}
	if err != nil {
		return nil, errs.New(errs.Image, opKargsD, "/"+KargsDDir, err, "")
	}
	if ok, err := t.isDir(rdir); err != nil || !ok {
		return nil, nil
	}
	names, err := t.readDirNames(rdir)
	if err != nil {
		return nil, errs.New(errs.Image, opKargsD, "/"+KargsDDir, err, "")
	}
	rarch := RustArch(arch)
	var out []string
	for _, n := range names {
		if strings.HasPrefix(n, ".") || !strings.HasSuffix(n, ".toml") {
			continue
		}
		p := path.Join(rdir, n)
		imgPath := "/" + path.Join(KargsDDir, n)
		data, err := t.readFile(p)
		if err != nil {
			return nil, errs.New(errs.Image, opKargsD, imgPath, err, "")
		}
		kargs, match, err := parseKargsD(imgPath, data)
		if err != nil {
			return nil, err
		}
		if match != nil && !slices.Contains(match, rarch) {
			continue
		}
		out = append(out, kargs...)
	}
	return out, nil
}

func parseKargsD(imgPath string, data []byte) (kargs, match []string, err error) {
	doc, err := parseTOML(imgPath, data, opKargsD)
	if err != nil {
		return nil, nil, err
	}
	if _, err := doc.validate(opKargsD, nil, doc.data, kargsDSchema, false); err != nil {
		return nil, nil, err
	}
	kargs, ok := getStrings(doc.data, "kargs")
	if !ok {
		return nil, nil, errs.New(errs.Image, opKargsD, imgPath, errMissingKargs, "add kargs = [...] or remove the file")
	}
	match, _ = getStrings(doc.data, "match-architectures")
	if _, has := doc.data["match-architectures"]; has && match == nil {
		match = []string{}
	}
	return kargs, match, nil
}
