// Package guestssh is everything SSH for armdev: the user's key pair, pinning
// the guest's host key, dialling the guest that QEMU's user-mode network
// forwards to 127.0.0.1:PORT, waiting for it to boot, running commands and
// interactive shells, quoting argv for the remote shell, and writing an
// OpenSSH config block so that plain `ssh -F FILE armdev` works too.
package guestssh
