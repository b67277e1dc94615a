module github.com/rsonpath/armdev

go 1.26.0

require (
	github.com/cavaliergopher/grab/v3 v3.0.1
	github.com/klauspost/compress v1.20.4
	github.com/magefile/mage v1.17.2
	golang.org/x/crypto v0.59.0
	golang.org/x/sys v0.50.0
	golang.org/x/term v0.48.0
)
