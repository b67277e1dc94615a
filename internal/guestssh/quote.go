package guestssh

import "strings"

// Quote joins args into one POSIX shell command line that the remote shell
// splits back into exactly args. Each argument that needs it is put in
// single quotes; an embedded single quote is written as quote, backslash,
// quote, quote (close, escaped quote, reopen); an empty argument becomes a
// pair of single quotes.
func Quote(args []string) string {
	out := make([]string, len(args))
	for i, a := range args {
		out[i] = quoteArg(a, i == 0)
	}
	return strings.Join(out, " ")
}

func quoteArg(a string, first bool) string {
	if a == "" {
		return "''"
	}
	safe := true
	for _, r := range a {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9':
		case strings.ContainsRune("_-./,:@%+", r):
		case r == '=' && !first: // a first word with = would be an assignment
		default:
			safe = false
		}
	}
	if safe {
		return a
	}
	return "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
}
