package guestssh

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/crypto/ssh"

	"github.com/rsonpath/armdev/internal/atomicfile"
)

// KeyComment is the comment put on the public key line.
const KeyComment = "armdev"

// Key is the user's SSH identity for the guest.
type Key struct {
	// Signer signs authentication requests with the private key.
	Signer ssh.Signer
	// AuthorizedKey is the public key as one authorized_keys line, without a newline.
	AuthorizedKey string
	// PrivatePath is the path of the private key file (for IdentityFile).
	PrivatePath string
}

// EnsureKey loads the ed25519 key pair dir/id_ed25519 and dir/id_ed25519.pub,
// creating it on first use. It refuses a private key file that group or others
// can access, as OpenSSH does.
func EnsureKey(dir string) (Key, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return Key{}, fmt.Errorf("ssh key: %w", err)
	}
	priv := filepath.Join(dir, "id_ed25519")
	signer, err := loadKey(priv)
	if errors.Is(err, fs.ErrNotExist) {
		signer, err = createKey(priv)
	}
	if err != nil {
		return Key{}, err
	}
	line := strings.TrimSpace(string(ssh.MarshalAuthorizedKey(signer.PublicKey()))) + " " + KeyComment
	pub := priv + ".pub"
	if old, err := os.ReadFile(pub); err != nil || strings.TrimSpace(string(old)) != line {
		if err := atomicfile.WriteFile(pub, []byte(line+"\n"), 0o644); err != nil {
			return Key{}, fmt.Errorf("ssh key: write public key: %w", err)
		}
	}
	return Key{Signer: signer, AuthorizedKey: line, PrivatePath: priv}, nil
}

func loadKey(path string) (ssh.Signer, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err // fs.ErrNotExist is handled by the caller
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("ssh key %s is accessible by others (mode %04o): run chmod 600 %s", path, perm, path)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	signer, err := ssh.ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("ssh key %s is unreadable (%v): remove it to get a new one", path, err)
	}
	return signer, nil
}

// createKey writes a new key to path without ever replacing an existing file:
// if another process wins the race, its key is loaded instead.
func createKey(path string) (ssh.Signer, error) {
	_, pk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("ssh key: generate: %w", err)
	}
	block, err := ssh.MarshalPrivateKey(pk, KeyComment)
	if err != nil {
		return nil, fmt.Errorf("ssh key: encode: %w", err)
	}
	if err := atomicfile.CreateFile(path, pem.EncodeToMemory(block), 0o600); err != nil && !errors.Is(err, fs.ErrExist) {
		return nil, fmt.Errorf("ssh key: %w", err)
	}
	return loadKey(path)
}
