package fetch

import (
	"context"
	"io"
	"reflect"

	"go.podman.io/image/v5/types"
)

var (
	ctxType       = reflect.TypeFor[context.Context]()
	blobInfoType  = reflect.TypeFor[types.BlobInfo]()
	streamsType   = reflect.TypeFor[chan io.ReadCloser]()
	errorsType    = reflect.TypeFor[chan error]()
	errorType     = reflect.TypeFor[error]()
	uint64Type    = reflect.TypeFor[uint64]()
	boolType      = reflect.TypeFor[bool]()
	chunkFieldSet = []string{"Offset", "Length"}
)

// getBlobFrom reads info from off to the end through the source's
// GetBlobAt, the byte-range read that containers/image's docker source
// implements (its oci and oci-archive sources do not; local files need no
// resume). The library exposes it only through an
// interface whose chunk type lives in an internal package, so the method is
// reached by reflection, and only after its exact shape has been checked:
// func(context.Context, types.BlobInfo, []struct{Offset, Length uint64})
// (chan io.ReadCloser, chan error, error). ok is false when the source has
// no usable range read (or a library update changed its shape); callers then
// re-read from the start.
func getBlobFrom(ctx context.Context, isrc types.ImageSource, info types.BlobInfo, off int64) (rc io.ReadCloser, ok bool, err error) {
	m, ok := rangeMethod(isrc)
	if !ok {
		return nil, false, nil
	}
	chunks := reflect.MakeSlice(m.Type().In(2), 1, 1)
	c := chunks.Index(0)
	c.FieldByName("Offset").SetUint(uint64(off))
	c.FieldByName("Length").SetUint(rangeEnd)
	out := m.Call([]reflect.Value{reflect.ValueOf(ctx), reflect.ValueOf(info), chunks})
	if e, _ := out[2].Interface().(error); e != nil {
		// Servers may refuse ranges (400, 416); a plain read still works.
		return nil, false, nil
	}
	streams, _ := out[0].Interface().(chan io.ReadCloser)
	errc, _ := out[1].Interface().(chan error)
	if streams == nil || errc == nil {
		return nil, false, nil
	}
	select {
	case s, open := <-streams:
		if open {
			return &rangeReader{ReadCloser: s, streams: streams, errc: errc}, true, nil
		}
		err := <-errc
		go drain(streams, errc)
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, true, err
	case err := <-errc:
		go drain(streams, errc)
		if err == nil {
			err = io.ErrUnexpectedEOF
		}
		return nil, true, err
	case <-ctx.Done():
		go drain(streams, errc)
		return nil, true, ctx.Err()
	}
}

// rangeMethod returns isrc's GetBlobAt when the source supports it and the
// method has the shape getBlobFrom relies on.
func rangeMethod(isrc types.ImageSource) (reflect.Value, bool) {
	v := reflect.ValueOf(isrc)
	sup := v.MethodByName("SupportsGetBlobAt")
	if !sup.IsValid() || sup.Type().NumIn() != 0 || sup.Type().NumOut() != 1 || sup.Type().Out(0) != boolType {
		return reflect.Value{}, false
	}
	if !sup.Call(nil)[0].Bool() {
		return reflect.Value{}, false
	}
	m := v.MethodByName("GetBlobAt")
	if !m.IsValid() {
		return reflect.Value{}, false
	}
	t := m.Type()
	if t.NumIn() != 3 || t.NumOut() != 3 || t.In(0) != ctxType || t.In(1) != blobInfoType ||
		t.Out(0) != streamsType || t.Out(1) != errorsType || t.Out(2) != errorType || t.In(2).Kind() != reflect.Slice {
		return reflect.Value{}, false
	}
	el := t.In(2).Elem()
	if el.Kind() != reflect.Struct || el.NumField() != len(chunkFieldSet) {
		return reflect.Value{}, false
	}
	for _, name := range chunkFieldSet {
		f, ok := el.FieldByName(name)
		if !ok || f.Type != uint64Type || !f.IsExported() {
			return reflect.Value{}, false
		}
	}
	return m, true
}

// rangeReader is the single stream of a one-chunk GetBlobAt; an error the
// source reports after the stream ends surfaces at EOF.
type rangeReader struct {
	io.ReadCloser
	streams chan io.ReadCloser
	errc    chan error
	closed  bool
}

func (r *rangeReader) Read(p []byte) (int, error) {
	n, err := r.ReadCloser.Read(p)
	if err == io.EOF {
		// The producer waits for the stream's Close before it ends.
		r.close()
		for e := range r.errc {
			if e != nil {
				err = e
			}
		}
	}
	return n, err
}

func (r *rangeReader) close() {
	if !r.closed {
		r.closed = true
		_ = r.ReadCloser.Close()
		go func() {
			for s := range r.streams {
				_ = s.Close()
			}
		}()
	}
}

func (r *rangeReader) Close() error {
	if !r.closed {
		r.close()
		go func() {
			for range r.errc {
			}
		}()
	}
	return nil
}

// drain lets a GetBlobAt producer finish when its output is abandoned.
func drain(streams chan io.ReadCloser, errc chan error) {
	for s := range streams {
		_ = s.Close()
	}
	for range errc {
	}
}
