"""Adversarial text for tokenizer tests and verification (shared with bench/).

`HAND_CASES` are fixed strings, one per tricky rule; `random_texts` mixes the
same kinds of characters from a seeded generator, so a failure reproduces.
"""

import random

HAND_CASES = [
    "",
    "   \t\n  ",
    "Hello, World!",
    "The quick brown fox jumped over the lazy dog's back.",
    "unaffable unwanted running UNWANTED",
    "Ünïcödé naïve café résumé Ångström Øre straße ẞ",
    "İstanbul DİYARBAKIR ǅemal ΣΊΣΥΦΟΣ ﬁnance ﬀ",
    "e\u0301 a\u0308\u0304 \u0301start end\u0301 x\u20dd",  # combining marks
    "北京大学 ab北京cd 𠀀𪜀𫝀𫠠𬺰 丽 한국어 ひらがな カタカナ 。、「」",
    "😀 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 ❤️ a😀b ☃ ©®™",
    "zero\u200bwidth join\u200der non\u200cjoiner \u2060word\ufeffjoiner \u00adsoft",
    "nul\x00here fffd\ufffdthere \x01\x02\x1b[0m bell\x07 del\x7f",
    "sep\x1cfile\x1dgroup\x1erecord\x1funit \x0bvtab\x0cform \x85nel",
    "nbsp\u00a0em\u2003ideo\u3000thin\u2009 line\u2028para\u2029end",
    "tab\tnew\nret\rcrlf\r\n",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "a$b^c`d~e+f<g=h>i|j",
    "¡¿«»—–‘’“”•…‰′″‹›※‼⁇ § ¶ ° ± × ÷ ¬",
    "don't won't y'all rock'n'roll U.S.A. e.g. 3.14 1,000,000 -5 +7",
    "x" * 199 + " " + "y" * 200 + " " + "z" * 201,
    "ab" * 150,
    "é" * 201,
    "e\u0301" * 150,
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "http://example.com/path?q=1&r=2#frag user@example.org",
    "[CLS] [SEP] [MASK] [UNK] [PAD] [unused0]",
    "Ⅻ ① ½ ² ٣ ۴ ߅ ໖ 𝟘 𝐀𝐁𝐂 ＡＢＣ ｆｕｌｌｗｉｄｔｈ",
    "Ελληνικά Русский текст עברית العربية हिन्दी ไทย",
    "\ud800 lone \udfff surrogates",
    "\U000e0001tag\U000e0041\U000e007f \U0001d173music \U000f0000private",
]

# Pools the random texts draw from, each a kind of character that some rule
# treats specially.
_POOLS = [
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
    " " * 10,
    "\t\n\r\x0b\x0c\x1c\x1d\x1e\x1f\x85\xa0\u1680\u2000\u2007\u200a\u2028"
    "\u2029\u202f\u205f\u3000",
    "\x00\x01\x08\x0e\x1b\x7f\x80\x9f\u00ad\u0600\u061c\u200b\u200c\u200d"
    "\u200e\u200f\u202a\u202e\u2060\u2066\ufeff\ufff9\U000110bd\U0001d173"
    "\U000e0001\U000e0020",
    "\ufffd",
    "".join(chr(cp) for cp in range(0x0300, 0x0370)) + "\u0483\u0591\u05bf"
    "\u0610\u093c\u0e31\u1ab0\u1dc0\u20d0\u20dd\ufe0f\ufe20\U000e0100",
    "".join(chr(cp) for cp in range(0xC0, 0x250)) + "İıſẞǅǈǋǲΣςΐΰﬀﬁﬃﬆ",
    "北京大学中文字符汉漢𠀀𪜀𫝀𫠠𬺰丽豈丽",
    "한국어ひらがなカタカナ。、「」〜・ㄱㄴ",
    "😀👍🏽👨‍👩‍👧‍👦🏳️‍🌈❤️☃✓✔★☆♠♣⌘⏰🀄🃏",
    "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~",
    "¡¿«»—–‘’“”•…‰′″‹›※‼⁇§¶°±×÷¬¦¨¯´¸©®™",
    "Ελληνικάπρόσωπα Русскийтекст עברית العربية हिन्दी ไทย ⅫⅣ①½²٣۴ＡＢＣｆｕ",
]


def random_texts(seed, count, max_length=60):
  """Returns `count` random strings mixing the pools and any code point.

  Each character comes from a random pool, or about one time in eight from
  the whole code space (surrogates included); now and then a long run of one
  character or a vocabulary-like word makes a very long word.
  """
  rng = random.Random(seed)
  texts = []
  for _ in range(count):
    chars = []
    for _ in range(rng.randint(0, max_length)):
      roll = rng.random()
      if roll < 0.125:
        chars.append(chr(rng.randrange(0x110000)))
      elif roll < 0.135:
        chars.append(rng.choice(_POOLS[0]) * rng.choice((50, 199, 200, 201)))
      elif roll < 0.2:
        chars.append(rng.choice(("the", "un", "##", "able", "Run", "ning",
                                 "ÉTÉ", "[UNK]", "want", "ed")))
      else:
        chars.append(rng.choice(rng.choice(_POOLS)))
    texts.append("".join(chars))
  return texts
