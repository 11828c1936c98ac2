/* text.h — Keras TextVectorization standardisation and splitting (defaults):
 * ASCII lower-case, delete the 32 ASCII punctuation characters (not replace:
 * "5-stars" -> "5stars"), split on runs of ASCII whitespace (space \t \n \v \f \r),
 * no empty tokens. Bytes >= 0x80 are kept as they are (tf.strings.lower with the
 * default encoding is ASCII-only). SEMANTICS.md sections 6 and 8.
 */
#ifndef MPIREC_TEXT_H
#define MPIREC_TEXT_H

#include <stddef.h>

/* Called once per token; return non-zero to stop. */
typedef int (*MrTokenFn)(const char *tok, size_t len, void *userdata);

/* Tokenise p[0..n). `scratch` must hold at least n bytes (tokens are written there
 * standardised). Returns 0 or the callback's non-zero value. */
int mr_text_tokenize(const char *p, size_t n, char *scratch, MrTokenFn fn, void *userdata);

#endif
