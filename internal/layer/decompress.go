package layer

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"
	"github.com/klauspost/pgzip"

	"github.com/bootlace/bootlace/internal/errs"
)

var (
	magicGzip = []byte{0x1f, 0x8b}
	magicZstd = []byte{0x28, 0xb5, 0x2f, 0xfd}
	magicXz   = []byte{0xfd, '7', 'z', 'X', 'Z', 0x00}
	magicBz2  = []byte{'B', 'Z', 'h'}
)

// zstdMaxWindow is 128 MiB (windowLog 27).
const zstdMaxWindow = 1 << 27

type compression int

const (
	compUnknown compression = iota
	compNone
	compGzip
	compZstd
)

// compressionOf maps a layer media type to its compression. Both the OCI
// ("+gzip", "+zstd") and Docker (".tar.gzip") spellings are understood;
// anything else is left for sniffing.
func compressionOf(mediaType string) (compression, error) {
	mt := strings.ToLower(strings.TrimSpace(mediaType))
	if i := strings.IndexByte(mt, ';'); i >= 0 {
		mt = strings.TrimSpace(mt[:i])
	}
	switch {
	case mt == "":
		return compUnknown, nil
	case strings.HasSuffix(mt, "+encrypted"):
		return compUnknown, fmt.Errorf("encrypted layer media type %q is not supported", mediaType)
	case strings.HasSuffix(mt, "+gzip"), strings.HasSuffix(mt, ".gzip"), strings.HasSuffix(mt, "+gz"):
		return compGzip, nil
	case strings.HasSuffix(mt, "+zstd"), strings.HasSuffix(mt, ".zstd"):
		return compZstd, nil
	default:
		// Plain "tar" media types and unknown ones: sniff, since some
		// registries and builders label compressed blobs as plain tar.
		return compUnknown, nil
	}
}

// Decompress returns the uncompressed tar stream for a blob of the given
// OCI/Docker media type, sniffing the magic bytes when the media type does
// not name a compression. gzip is decoded with klauspost/pgzip, zstd with
// klauspost/compress/zstd; anything else is passed through as a plain tar.
// Closing the result releases the decoder; it does not close r. Errors are
// classified as errs.Image: the blob is not a layer bootlace can read.
func Decompress(r io.Reader, mediaType string) (io.ReadCloser, error) {
	rc, err := decompress(r, mediaType)
	if err != nil {
		return nil, errs.New(errs.Image, "decompressing layer", "", err, "the layer blob is corrupt or uses an unsupported compression")
	}
	return rc, nil
}

func decompress(r io.Reader, mediaType string) (io.ReadCloser, error) {
	comp, err := compressionOf(mediaType)
	if err != nil {
		return nil, err
	}
	br := bufio.NewReaderSize(r, 64<<10)
	if comp == compUnknown {
		head, err := br.Peek(6)
		if err != nil && !errors.Is(err, io.EOF) {
			return nil, fmt.Errorf("reading layer header: %w", err)
		}
		switch {
		case bytes.HasPrefix(head, magicGzip):
			comp = compGzip
		case bytes.HasPrefix(head, magicZstd):
			comp = compZstd
		case bytes.HasPrefix(head, magicXz):
			return nil, errors.New("xz-compressed layers are not supported (not allowed by the OCI image spec)")
		case bytes.HasPrefix(head, magicBz2):
			return nil, errors.New("bzip2-compressed layers are not supported (not allowed by the OCI image spec)")
		default:
			comp = compNone
		}
	}
	switch comp {
	case compGzip:
		zr, err := pgzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("opening gzip layer (media type %q): %w", mediaType, err)
		}
		return zr, nil
	case compZstd:
		// The window bound is the zstd CLI's default decoding limit: a frame
		// that declares a larger window would make the decoder allocate it.
		zr, err := zstd.NewReader(br, zstd.WithDecoderMaxWindow(zstdMaxWindow))
		if err != nil {
			return nil, fmt.Errorf("opening zstd layer (media type %q): %w", mediaType, err)
		}
		return zr.IOReadCloser(), nil
	default:
		return io.NopCloser(br), nil
	}
}
