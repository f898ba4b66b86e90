package ostreecommit

import "encoding/binary"

// gv is one serialized GVariant value in normal form, with what a
// container needs to place it: its alignment and whether its type is
// fixed-size (fixed-size members get no framing offset).
type gv struct {
	data  []byte
	align int
	fixed bool
}

// gvU32BE is a "u" holding v in big-endian byte order, as ostree stores
// uid, gid and mode (it applies GUINT32_TO_BE before serializing).
func gvU32BE(v uint32) gv {
	return gv{data: binary.BigEndian.AppendUint32(nil, v), align: 4, fixed: true}
}

// gvU64BE is a "t" in big-endian byte order (the commit timestamp).
func gvU64BE(v uint64) gv {
	return gv{data: binary.BigEndian.AppendUint64(nil, v), align: 8, fixed: true}
}

// gvString is an "s": the bytes and a terminating NUL.
func gvString(s string) gv {
	b := make([]byte, len(s)+1)
	copy(b, s)
	return gv{data: b, align: 1}
}

// gvBytes is an "ay": an array of a fixed-size type has no framing.
func gvBytes(b []byte) gv {
	return gv{data: b, align: 1}
}

// gvVariant is a "v": the child, a NUL and the child's type string.
func gvVariant(child gv, typ string) gv {
	b := make([]byte, 0, len(child.data)+1+len(typ))
	b = append(b, child.data...)
	b = append(b, 0)
	b = append(b, typ...)
	return gv{data: b, align: 8}
}

// offsetSize is the width of framing offsets for a container whose body
// is bodyLen bytes and which carries n offsets: the smallest width whose
// maximum holds the whole serialized size (g_variant_serialiser's rule).
func offsetSize(bodyLen, n int) int {
	switch {
	case bodyLen+n <= 0xff:
		return 1
	case bodyLen+2*n <= 0xffff:
		return 2
	case uint64(bodyLen)+4*uint64(n) <= 0xffffffff:
		return 4
	default:
		return 8
	}
}

func appendOffset(b []byte, v, width int) []byte {
	switch width {
	case 1:
		return append(b, byte(v))
	case 2:
		return binary.LittleEndian.AppendUint16(b, uint16(v))
	case 4:
		return binary.LittleEndian.AppendUint32(b, uint32(v))
	default:
		return binary.LittleEndian.AppendUint64(b, uint64(v))
	}
}

func pad(b []byte, align int) []byte {
	for len(b)%align != 0 {
		b = append(b, 0)
	}
	return b
}

// gvArray is an "a<elem>". elemAlign and elemFixed describe the element
// type, so that an empty array still gets the right alignment.
func gvArray(elemAlign int, elemFixed bool, elems []gv) gv {
	out := gv{align: elemAlign}
	if len(elems) == 0 {
		return out
	}
	size := 0
	for _, e := range elems {
		size += len(e.data) + elemAlign
	}
	b := make([]byte, 0, size+8*len(elems))
	var ends []int
	if !elemFixed {
		ends = make([]int, 0, len(elems))
	}
	for _, e := range elems {
		b = pad(b, elemAlign)
		b = append(b, e.data...)
		if !elemFixed {
			ends = append(ends, len(b))
		}
	}
	if !elemFixed {
		w := offsetSize(len(b), len(ends))
		for _, end := range ends {
			b = appendOffset(b, end, w)
		}
	}
	out.data = b
	return out
}

// gvTuple is a "(...)" (or a "{..}" dict entry). The end offset of every
// variable-size member except the last goes into a table at the end, in
// reverse order; an all-fixed tuple is padded to its alignment instead.
func gvTuple(members ...gv) gv {
	out := gv{align: 1, fixed: true}
	size := 0
	for _, m := range members {
		if m.align > out.align {
			out.align = m.align
		}
		if !m.fixed {
			out.fixed = false
		}
		size += len(m.data) + m.align
	}
	b := make([]byte, 0, size+8)
	var ends []int
	for i, m := range members {
		b = pad(b, m.align)
		b = append(b, m.data...)
		if !m.fixed && i != len(members)-1 {
			ends = append(ends, len(b))
		}
	}
	if out.fixed {
		if len(b) == 0 {
			b = append(b, 0) // the unit tuple is one zero byte
		}
		b = pad(b, out.align)
	} else if len(ends) > 0 {
		w := offsetSize(len(b), len(ends))
		for i := len(ends) - 1; i >= 0; i-- {
			b = appendOffset(b, ends[i], w)
		}
	}
	out.data = b
	return out
}
