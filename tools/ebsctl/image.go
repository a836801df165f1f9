package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"io"
	"os"
)

const (
	blockSize    = 524288
	blocksPerGiB = 1 << 30 / blockSize
)

var zeroBlock = make([]byte, blockSize)

// imageFile reads an image in blocks; the last partial block is zero-padded.
type imageFile struct {
	f    *os.File
	size int64
	data []uint64 // blocks with data, from dataBlocks; nil: every block may have data
}

func openImage(path string) (*imageFile, error) {
	// Opening a pipe waits for a writer: look before opening, and again after.
	if fi, err := os.Stat(path); err == nil && !imageMode(fi.Mode()) {
		return nil, notAnImage(path)
	}
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
	if !imageMode(fi.Mode()) {
		f.Close()
		return nil, notAnImage(path)
	}
	if !fi.Mode().IsRegular() {
		if size, err = f.Seek(0, io.SeekEnd); err != nil {
			f.Close()
			return nil, fmt.Errorf("size of device %s: %w", path, err)
		}
	}
	im := &imageFile{f: f, size: size}
	if fi.Mode().IsRegular() {
		im.data = dataBlocks(f, size)
	}
	return im, nil
}

// imageMode says whether a file of this mode can be an image: a regular file or a
// block device. A pipe or a character device has no size to give, and a snapshot's
// volume size comes first: read as if it had one, it became an empty snapshot.
func imageMode(mode os.FileMode) bool {
	return mode.IsRegular() || (mode&os.ModeDevice != 0 && mode&os.ModeCharDevice == 0)
}

func notAnImage(path string) error {
	return fmt.Errorf("%s is not a regular file or a block device (a pipe has no size to make a volume of): write the image to a file first", path)
}

func (im *imageFile) blocks() int64 { return (im.size + blockSize - 1) / blockSize }

// gib is the volume size that holds the image.
func (im *imageFile) gib() int64 { return max(1, (im.size+1<<30-1)>>30) }

// hole says whether block i lies in a hole of the file, so holds zeros without a read.
func (im *imageFile) hole(i int64) bool {
	return im.data != nil && i < im.blocks() && im.data[i/64]&(1<<(i%64)) == 0
}

// block reads block i into buf (blockSize bytes).
func (im *imageFile) block(i int64, buf []byte) error {
	if im.hole(i) {
		clear(buf)
		return nil
	}
	n, err := im.f.ReadAt(buf, i*blockSize)
	if err == io.EOF || (err == nil && n == blockSize) {
		clear(buf[n:])
		return nil
	}
	return fmt.Errorf("reading block %d: %w", i, err)
}

func (im *imageFile) Close() error { return im.f.Close() }

func isZero(b []byte) bool { return bytes.Equal(b, zeroBlock) }

// digestOf is checksum with the zero block's digest known in advance.
func digestOf(b []byte, allZero bool) (raw [32]byte, b64 string) {
	if allZero {
		return zeroDigest, zeroChecksum
	}
	return checksum(b)
}

func checksum(b []byte) (raw [32]byte, b64 string) {
	raw = sha256.Sum256(b)
	return raw, base64.StdEncoding.EncodeToString(raw[:])
}
