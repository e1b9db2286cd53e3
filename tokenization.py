"""WordPiece tokenization with exactly the rules of Google's BERT tokenizer.

Two layers, the same tokens:

* The reference rules, written plainly and kept as the definition:
  `BasicTokenizer` (text cleanup, CJK characters as words, lowercasing and
  accent stripping, punctuation split) and `WordpieceTokenizer` (greedy
  longest-match-first pieces with "##" continuations). `FullTokenizer.
  reference_tokenize` chains them as Google's `FullTokenizer.tokenize` does.
* The fast path, `FullTokenizer.tokenize`, the hot loop of pretraining data
  creation. It rests on two facts about the rules:
    1. Cleanup and CJK spacing map each character on its own (to nothing, a
       space, " c " or itself), so one `str.translate` with a per-character
       table built from the reference predicates does both in C.
    2. Everything after the whitespace split works on each whitespace-
       separated chunk alone, and the output is the concatenation of the
       chunks' outputs. So the tokens of a chunk can be memoized: English text
       repeats a small set of chunks ("the", "said,", "(1999)."), and a cache
       hit costs one dict lookup instead of a few Python steps per
       character. A miss runs the reference rules on that chunk, with
       shortcuts proven equal for the inputs they take: a pure-ASCII chunk has
       no accents to strip and splits on punctuation by a regex; a word that is
       a vocabulary token is its own WordPiece; no WordPiece candidate longer
       than the longest vocabulary token is tried.
  tests/test_tokenization.py checks the fast path against the reference rules
  and against golden output of Google's published tokenizer.
"""

import collections
import re
import unicodedata

# Words longer than this many characters become the unknown token (Google's
# `max_input_chars_per_word`).
MAX_INPUT_CHARS_PER_WORD = 200

# Google's ASCII punctuation: every printable non-letter/digit ASCII symbol
# ("$", "+", "^", "`" are not Unicode category P* but count all the same).
_ASCII_PUNCTUATION_RANGES = ((33, 47), (58, 64), (91, 96), (123, 126))

# CJK Unified Ideographs and their extensions and compatibility blocks: the
# characters Google's tokenizer makes single-character words. Hangul, kana and
# CJK punctuation are not among them.
_CJK_RANGES = (
    (0x4E00, 0x9FFF),
    (0x3400, 0x4DBF),
    (0x20000, 0x2A6DF),
    (0x2A700, 0x2B73F),
    (0x2B740, 0x2B81F),
    (0x2B820, 0x2CEAF),
    (0xF900, 0xFAFF),
    (0x2F800, 0x2FA1F),
)

# A pure-ASCII chunk (no whitespace or control characters left) splits into
# runs of letters/digits and single punctuation characters.
_ASCII_WORDS_AND_PUNCTUATION = re.compile(r"[0-9A-Za-z]+|[^0-9A-Za-z]")


def convert_to_unicode(text):
  """Returns `text` as str; bytes are decoded as UTF-8, dropping bad bytes."""
  if isinstance(text, str):
    return text
  if isinstance(text, bytes):
    return text.decode("utf-8", "ignore")
  raise ValueError(f"Unsupported string type: {type(text)}")


def printable_text(text):
  """Returns `text` as str for printing or logging (same as in Python 3)."""
  return convert_to_unicode(text)


def load_vocab(vocab_file):
  """Reads a vocabulary file, one token per line, into {token: line index}.

  Surrounding whitespace is stripped from each line. A token repeated later in
  the file takes the later index, and every line (blank ones too) advances the
  index, as in Google's loader. Local paths are read directly; other paths
  (gs://...) go through tf.io.gfile.

  Raises:
    ValueError: a line is not UTF-8 (names the file and the line).
  """
  vocab = collections.OrderedDict()
  with _open_lines(vocab_file) as reader:
    for index, line in enumerate(reader):
      try:
        token = line.decode("utf-8")
      except UnicodeDecodeError as e:
        raise ValueError(f"{vocab_file}: line {index + 1}: not UTF-8 text "
                         f"(byte {e.start} of the line); a BERT vocab.txt "
                         f"is UTF-8") from None
      vocab[token.strip()] = index
  return vocab


def _open_lines(path):
  """Opens a file for reading its lines as bytes, split on "\\n" only (as
  tf.io.gfile)."""
  if "://" in path:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    return tf.io.gfile.GFile(path, "rb")
  return open(path, "rb")


def convert_by_vocab(vocab, items):
  """Maps every item through `vocab` (a KeyError names a missing item)."""
  return list(map(vocab.__getitem__, items))


def convert_tokens_to_ids(vocab, tokens):
  """Maps tokens to their vocabulary ids."""
  return convert_by_vocab(vocab, tokens)


def convert_ids_to_tokens(inv_vocab, ids):
  """Maps vocabulary ids back to tokens."""
  return convert_by_vocab(inv_vocab, ids)


def whitespace_tokenize(text):
  """Splits text on runs of whitespace (Python's notion), dropping the ends."""
  return text.split()


# ----------------------------------------------------------------------------
# Character classes of the reference rules.


def is_whitespace(char):
  """Space, tab, newline, carriage return and Unicode space separators (Zs)."""
  if char in " \t\n\r":
    return True
  return unicodedata.category(char) == "Zs"


def is_control(char):
  """Control (Cc) and format (Cf) characters, except tab/newline/return."""
  if char in "\t\n\r":
    return False
  return unicodedata.category(char) in ("Cc", "Cf")


def is_punctuation(char):
  """Printable non-alphanumeric ASCII, and Unicode punctuation (P*)."""
  cp = ord(char)
  for low, high in _ASCII_PUNCTUATION_RANGES:
    if low <= cp <= high:
      return True
  return unicodedata.category(char).startswith("P")


def is_chinese_char(cp):
  """Whether code point `cp` is a CJK ideograph (see _CJK_RANGES)."""
  for low, high in _CJK_RANGES:
    if low <= cp <= high:
      return True
  return False


# ----------------------------------------------------------------------------
# The reference rules.


def clean_text(text):
  """Drops NUL, U+FFFD and control characters; whitespace becomes " "."""
  output = []
  for char in text:
    cp = ord(char)
    if cp == 0 or cp == 0xFFFD or is_control(char):
      continue
    output.append(" " if is_whitespace(char) else char)
  return "".join(output)


def space_chinese_chars(text):
  """Puts a space on both sides of every CJK ideograph."""
  output = []
  for char in text:
    if is_chinese_char(ord(char)):
      output.append(f" {char} ")
    else:
      output.append(char)
  return "".join(output)


def strip_accents(text):
  """Decomposes text (NFD) and drops the nonspacing marks (Mn)."""
  return "".join(char for char in unicodedata.normalize("NFD", text)
                 if unicodedata.category(char) != "Mn")


def split_on_punctuation(text):
  """Splits text into runs of non-punctuation and single punctuation chars."""
  pieces = []
  start_new_piece = True
  for char in text:
    if is_punctuation(char):
      pieces.append([char])
      start_new_piece = True
    else:
      if start_new_piece:
        pieces.append([])
      start_new_piece = False
      pieces[-1].append(char)
  return ["".join(piece) for piece in pieces]


class BasicTokenizer:
  """Reference rules for splitting text into words (before WordPiece)."""

  def __init__(self, do_lower_case=True):
    self.do_lower_case = do_lower_case

  def tokenize(self, text):
    """Cleans text, spaces CJK characters, splits on whitespace, then splits
    each chunk (lowercased and accent-stripped when do_lower_case) on
    punctuation. Returns the list of words."""
    text = space_chinese_chars(clean_text(convert_to_unicode(text)))
    words = []
    for chunk in whitespace_tokenize(text):
      if self.do_lower_case:
        chunk = strip_accents(chunk.lower())
      words.extend(split_on_punctuation(chunk))
    return whitespace_tokenize(" ".join(words))


class WordpieceTokenizer:
  """Reference rules for greedy longest-match-first WordPiece."""

  def __init__(self, vocab, unk_token="[UNK]",
               max_input_chars_per_word=MAX_INPUT_CHARS_PER_WORD):
    self.vocab = vocab
    self.unk_token = unk_token
    self.max_input_chars_per_word = max_input_chars_per_word

  def tokenize(self, text):
    """Splits each whitespace-separated word of `text` into vocabulary pieces.

    From the start of the word, the longest prefix in the vocabulary is taken,
    then the longest "##"-prefixed continuation, and so on. A word longer than
    max_input_chars_per_word, or one with a part that no piece matches,
    becomes the single unknown token. For example "unaffable" gives
    ["un", "##aff", "##able"].
    """
    output = []
    for word in whitespace_tokenize(convert_to_unicode(text)):
      output.extend(self.tokenize_word(word))
    return output

  def tokenize_word(self, word):
    """WordPiece for one word without whitespace (see `tokenize`)."""
    if len(word) > self.max_input_chars_per_word:
      return [self.unk_token]
    pieces = []
    start = 0
    while start < len(word):
      end = len(word)
      piece = None
      while end > start:
        candidate = word[start:end]
        if start > 0:
          candidate = "##" + candidate
        if candidate in self.vocab:
          piece = candidate
          break
        end -= 1
      if piece is None:
        return [self.unk_token]
      pieces.append(piece)
      start = end
    return pieces


# ----------------------------------------------------------------------------
# The fast path.


class _CleanupTable(dict):
  """{code point: replacement} for str.translate, filled on first sight.

  The replacement of a character is what `clean_text` and then
  `space_chinese_chars` make of it alone: None (dropped), " ", " c ", or the
  character itself. Bounded: cleared when it holds `max_size` characters.
  """

  def __init__(self, max_size=100_000):
    super().__init__()
    self.max_size = max_size

  def __missing__(self, cp):
    if len(self) >= self.max_size:
      self.clear()
    value = space_chinese_chars(clean_text(chr(cp))) or None
    if value == chr(cp):
      value = cp
    self[cp] = value
    return value


# Characters that may change in cleanup: all but printable ASCII and space.
_MAYBE_UNCLEAN = re.compile(r"[^\x20-\x7e]")


class FullTokenizer:
  """Text to WordPiece tokens and ids: Google's rules, memoized per chunk.

  Attributes:
    vocab: OrderedDict {token: id}.
    inv_vocab: {id: token}.
    basic_tokenizer, wordpiece_tokenizer: the reference rules.
  """

  def __init__(self, vocab_file, do_lower_case=True, cache_size=200_000):
    """Loads the vocabulary.

    Args:
      vocab_file: vocabulary file, one token per line.
      do_lower_case: lowercase and strip accents (for uncased models).
      cache_size: at most this many chunks are memoized; the memo is emptied
        when full. An entry takes about 230 bytes (200,000: some 46 MB). Keep
        one tokenizer per process across files so the memo stays warm.
    """
    self.vocab = load_vocab(vocab_file)
    self.inv_vocab = {index: token for token, index in self.vocab.items()}
    self.do_lower_case = do_lower_case
    self.basic_tokenizer = BasicTokenizer(do_lower_case=do_lower_case)
    self.wordpiece_tokenizer = WordpieceTokenizer(vocab=self.vocab)
    self.cache_size = cache_size
    self._chunk_tokens = {}
    self._cleanup_table = _CleanupTable()
    # Pieces point at the vocabulary's own strings, so cached and returned
    # token lists share them instead of holding copies.
    self._canonical = {token: token for token in self.vocab}
    self._max_token_chars = max(map(len, self.vocab), default=0)

  def reference_tokenize(self, text):
    """Google's tokenization, step by step with the reference rules."""
    tokens = []
    for word in self.basic_tokenizer.tokenize(text):
      tokens.extend(self.wordpiece_tokenizer.tokenize(word))
    return tokens

  def tokenize(self, text):
    """Returns the WordPiece tokens of `text` (same as reference_tokenize)."""
    text = convert_to_unicode(text)
    if _MAYBE_UNCLEAN.search(text):
      text = text.translate(self._cleanup_table)
    cache = self._chunk_tokens
    tokens = []
    for chunk in text.split():
      pieces = cache.get(chunk)
      if pieces is None:
        pieces = self._tokenize_chunk(chunk)
        if len(cache) >= self.cache_size:
          cache.clear()
        cache[chunk] = pieces
      tokens += pieces
    return tokens

  def _tokenize_chunk(self, chunk):
    """Tokens of one cleaned chunk without whitespace, as the reference rules
    make them: (lowercase, strip accents,) punctuation split, WordPiece."""
    if chunk.isascii():
      # ASCII has no characters that NFD decomposes, hence no accents.
      if self.do_lower_case:
        chunk = chunk.lower()
      words = _ASCII_WORDS_AND_PUNCTUATION.findall(chunk)
    else:
      if self.do_lower_case:
        chunk = strip_accents(chunk.lower())
      # Lowercasing or decomposing may, in principle, bring whitespace.
      words = whitespace_tokenize(" ".join(split_on_punctuation(chunk)))
    canonical = self._canonical
    max_chars = self.wordpiece_tokenizer.max_input_chars_per_word
    pieces = []
    for word in words:
      # Most words are whole vocabulary tokens: their WordPiece is themselves.
      piece = canonical.get(word)
      if piece is not None and len(word) <= max_chars:
        pieces.append(piece)
      else:
        pieces += self._wordpiece(word)
    return tuple(pieces)

  def _wordpiece(self, word):
    """WordpieceTokenizer.tokenize_word, trying no candidate longer than the
    longest vocabulary token (none of those can match)."""
    canonical = self._canonical
    if len(word) > self.wordpiece_tokenizer.max_input_chars_per_word:
      return [self.wordpiece_tokenizer.unk_token]
    if word in canonical:
      return [canonical[word]]
    pieces = []
    start = 0
    while start < len(word):
      end = min(len(word), start + self._max_token_chars)
      piece = None
      while end > start:
        candidate = word[start:end]
        if start > 0:
          candidate = "##" + candidate
        piece = canonical.get(candidate)
        if piece is not None:
          break
        end -= 1
      if piece is None:
        return [self.wordpiece_tokenizer.unk_token]
      pieces.append(piece)
      start = end
    return pieces

  def convert_tokens_to_ids(self, tokens):
    """Maps tokens to their vocabulary ids."""
    return convert_by_vocab(self.vocab, tokens)

  def convert_ids_to_tokens(self, ids):
    """Maps vocabulary ids back to tokens."""
    return convert_by_vocab(self.inv_vocab, ids)


SPECIAL_TOKENS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def subset_vocabulary(lines, vocab_file, do_lower_case=True):
  """The tokens of vocab_file that the text `lines` tokenizes to.

  A subset of a WordPiece vocabulary holding every piece the full one gives
  for a text tokenizes that text exactly as the full one does (greedy
  longest match: the longest piece in the full vocabulary is in the subset,
  and nothing longer is). Returns SPECIAL_TOKENS, then the used tokens in
  the full vocabulary's order: the lines of a vocab.txt.
  """
  tokenizer = FullTokenizer(vocab_file, do_lower_case)
  used = set()
  for line in lines:
    used.update(tokenizer.tokenize(line))
  return list(SPECIAL_TOKENS) + [
      token for token in tokenizer.vocab
      if token in used and token not in SPECIAL_TOKENS]
