package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
)

const blockSize = 524288

var zeroBlock = make([]byte, blockSize)

// imageFile reads an image in blocks; the last partial block is zero-padded.
type imageFile struct {
	f    *os.File
	size int64
}

func openImage(path string) (*imageFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	size := fi.Size()
	if fi.Mode()&os.ModeDevice != 0 {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("size of device %s: %w", path, err)
		}
	}
	return &imageFile{f: f, size: size}, nil
}

func (im *imageFile) blocks() int64 { return (im.size + blockSize - 1) / blockSize }

// gib is the volume size that holds the image.
func (im *imageFile) gib() int64 { return max(1, (im.size+1<<30-1)>>30) }

// block reads block i into buf (blockSize bytes).
func (im *imageFile) block(i int64, buf []byte) error {
	n, err := im.f.ReadAt(buf, i*blockSize)
	if err == io.EOF || (err == nil && n == blockSize) {
		clear(buf[n:])
		return nil
	}
	return fmt.Errorf("reading block %d: %w", i, err)
}

func (im *imageFile) Close() error { return im.f.Close() }

func isZero(b []byte) bool { return bytes.Equal(b, zeroBlock) }

func checksum(b []byte) (raw [32]byte, b64 string) {
	raw = sha256.Sum256(b)
	return raw, base64.StdEncoding.EncodeToString(raw[:])
}
