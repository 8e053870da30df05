"""Data-driven signature cases: (database file, line, matching sample, near-miss sample).

Each line defines one signature named after the syntax element it exercises; the matching
sample must be reported under that name, the near miss must not. The same table feeds the
differential test against Debian's clamscan, so every case is also checked against ClamAV.
"""

from __future__ import annotations

import hashlib

from av_samples import minimal_elf, minimal_pe

PAD = b"-- padding text that matches nothing in particular --\n"
PE_CODE = b"\x55\x8b\xec\x83\xec\x10" + b"ENTRYPOINT-CODE-" * 4


def _pe(code: bytes = PE_CODE) -> bytes:
    return minimal_pe(code)


_PE = _pe()
_PE_OTHER = _pe(b"\x90" * 3 + PE_CODE)
_HASHED = b"a file known by its hash, nothing else\n"
_HASHED_MISS = b"a file known by its hash, nothing else!\n"

# (extension, signature line, matching sample, near-miss sample)
CASES: list[tuple[str, str, bytes, bytes]] = [
    ("ndb", "Syn.Literal:0:*:6c69746572616c2d6d61726b6572",
     PAD + b"literal-marker" + PAD, PAD + b"literal-marke_r" + PAD),
    ("ndb", "Syn.AnyByte:0:*:616e79627974653a??3a656e64",
     PAD + b"anybyte:X:end" + PAD, PAD + b"anybyte::end" + PAD),
    ("ndb", "Syn.HighNibble:0:*:686967686e69623a3?3a656e64",
     PAD + b"highnib:7:end" + PAD, PAD + b"highnib:G:end" + PAD),
    ("ndb", "Syn.LowNibble:0:*:6c6f776e69623a?13a656e64",
     PAD + b"lownib:Q:end" + PAD, PAD + b"lownib:R:end" + PAD),
    ("ndb", "Syn.Star:0:*:737461722d6f70656e*737461722d636c6f7365",
     PAD + b"star-open" + PAD * 3 + b"star-close", PAD + b"star-close star-open" + PAD),
    ("ndb", "Syn.JumpExact:0:*:6a756d7065786163743a{3}3a656e64",
     PAD + b"jumpexact:abc:end" + PAD, PAD + b"jumpexact:abcd:end" + PAD),
    ("ndb", "Syn.JumpUpTo:0:*:6a756d7075707470{-3}656e646d61726b",
     PAD + b"jumpuptp12endmark" + PAD, PAD + b"jumpuptp1234endmark" + PAD),
    ("ndb", "Syn.JumpAtLeast:0:*:6a756d706174{4-}6c65617374656e64",
     PAD + b"jumpat123456leastend" + PAD, PAD + b"jumpat12leastend" + PAD),
    ("ndb", "Syn.JumpRange:0:*:6a756d7072616e6765{2-4}72616e6765656e64",
     PAD + b"jumprange123rangeend" + PAD, PAD + b"jumprange12345rangeend" + PAD),
    ("ndb", "Syn.Alternatives:0:*:616c7465726e3a(6f6e65|74776f6f)3a656e64",
     PAD + b"altern:twoo:end" + PAD, PAD + b"altern:three:end" + PAD),
    ("ndb", "Syn.NegatedAlt:0:*:6e65676174653a!(31|32)3a656e64",
     PAD + b"negate:3:end" + PAD, PAD + b"negate:1:end" + PAD),
    ("ndb", "Syn.OffsetExact:0:0:6f66667365742d7a65726f",
     b"offset-zero" + PAD, b" offset-zero" + PAD),
    ("ndb", "Syn.OffsetShift:0:10,5:7368696674656421",
     b"0123456789012shifted!" + PAD, b"0123456789012345678shifted!" + PAD),
    ("ndb", "Syn.OffsetEOF:0:EOF-12:656f662d6d61726b6572",
     PAD + b"eof-marker\n\n", PAD + b"eof-marker\n\n\n"),
    ("ndb", "Syn.AbsoluteN:0:60:6162736f6c7574652d6e",
     PAD + b"123456absolute-n" + PAD, PAD + b"12345absolute-n" + PAD),
    ("ndb", "Syn.EntryPoint:1:EP+0:558bec83ec10",
     _PE, _PE_OTHER),
    ("ndb", "Syn.EntryPointShift:1:EP+7,3:454e545259504f494e54",
     _PE_OTHER, _PE),
    ("ndb", "Syn.Section:1:S1+0:73656374696f6e20312064617461",
     _PE, PAD + b"section 1 data" + PAD),
    ("ndb", "Syn.LastSection:1:SL+8:3120646174612073",
     _PE, minimal_pe(PE_CODE, sections=3)),
    ("ndb", "Syn.ElfEntryPoint:6:EP+0:" + b"elf-entry-code".hex(),
     minimal_elf(b"elf-entry-code" + b"\x90" * 32),
     minimal_elf(b"\x90" * 4 + b"elf-entry-code" + b"\x90" * 32)),
    ("ndb", "Syn.TargetPE:1:*:454e545259504f494e542d434f4445",
     _PE, PAD + b"ENTRYPOINT-CODE" + PAD),
    ("ndb", "Syn.TextNormalized:7:*:6e6f726d616c697a6564206d61726b",
     PAD + b"NORMALIZED \t\r\n  MARK" + PAD, PAD + b"normalizedmark" + PAD),
    ("ndb", "Syn.HtmlNormalized:3:*:" + b"html-mark here".hex(),
     b"<html><body><p>HTML-MARK \n  here</p></body></html>\n",
     PAD + b"html-mark here" + PAD),
    ("ndb", "Syn.TextRawTab:0:*:7261772d746162096d61726b",
     PAD + b"raw-tab\tmark" + PAD, PAD + b"raw-tab mark" + PAD),
    ("ldb", "Syn.Logical.And;Engine:51-255,Target:0;0&1;6c6f672d616e642d61;6c6f672d616e642d62",
     PAD + b"log-and-b" + PAD + b"log-and-a" + PAD, PAD + b"log-and-a" + PAD),
    ("ldb", "Syn.Logical.Or;Engine:51-255,Target:0;0|1;6c6f672d6f722d61;6c6f672d6f722d62",
     PAD + b"log-or-b" + PAD, PAD + b"log-or-c" + PAD),
    ("ldb", "Syn.Logical.CountGt;Engine:51-255,Target:0;0>2;636f756e742d6d65",
     PAD + b"count-me count-me count-me" + PAD, PAD + b"count-me count-me" + PAD),
    ("ldb", "Syn.Logical.CountEq;Engine:51-255,Target:0;0=2&1;657861637432;74776f2d6f6b",
     PAD + b"exact2 exact2 two-ok" + PAD, PAD + b"exact2 exact2 exact2 two-ok" + PAD),
    ("ldb", ("Syn.Logical.Group;Engine:51-255,Target:0;(0|1|2)>2,2;677270782d;677270792d;"
      "6772707a2d"),
     PAD + b"grpx- grpx- grpy-" + PAD, PAD + b"grpx- grpx- grpx-" + PAD),
    ("ldb", ("Syn.Logical.SubOffset;Engine:51-255,Target:0;0&1;0:737562736f66662d;"
      "6f66667365742d746169"),
     b"subsoff-" + PAD + b"offset-tai", b" subsoff-" + PAD + b"offset-tai"),
    ("ldb", "Syn.Logical.NoCase;Engine:51-255,Target:0;0;6e6f636173652d6d61726b::i",
     PAD + b"NoCaSe-MaRk" + PAD, PAD + b"nocase-mar" + PAD),
    ("ldb", "Syn.Logical.Wide;Engine:51-255,Target:0;0;776964652d6d61726b::w",
     PAD + "wide-mark".encode("utf-16-le") + PAD, PAD + b"wide-mark" + PAD),
    ("ldb", ("Syn.Logical.FileSize;Engine:51-255,Target:0,FileSize:100-200;0;"
      "73697a65642d6d61726b"),
     b"sized-mark" + PAD + b"x" * 40, b"sized-mark" + PAD + b"x" * 400),
    ("ldb", "Syn.Logical.Pcre;Engine:81-255,Target:0;0&1;7063726521;0/ab[0-9]{3}cd/",
     PAD + b"pcre! then ab123cd" + PAD, PAD + b"pcre! then ab12cd" + PAD),
    ("ldb", "Syn.Logical.PcreTrigger;Engine:81-255,Target:0;1;74726967676572;0/zz[a-c]+yy/",
     PAD + b"trigger zzabcyy" + PAD, PAD + b"trigge zzabcyy" + PAD),
    ("ldb", "Syn.Logical.PcreNoCase;Engine:81-255,Target:0;1;6e6f636173652d;0/qq[a-z]{2}ww/i",
     b"\0\1\2nocase- QQAbWW\0\0" + PAD, b"\0\1\2nocase- QQAbbWW\0\0" + PAD),
    ("ldb", "Syn.Logical.PeSections;Engine:51-255,Target:1,NumberOfSections:2-2;0;"
     + b"ENTRYPOINT-CODE".hex(), _PE, minimal_pe(PE_CODE, sections=3)),
    ("ldb", "Syn.Logical.PeEntry;Engine:51-255,Target:1,EntryPoint:500-520;0;"
     + b"ENTRYPOINT-CODE".hex(), _PE, PAD + b"ENTRYPOINT-CODE"),
    ("mdb", f"512:{hashlib.md5(_PE[0x200:0x400]).hexdigest()}:Syn.Section.MD5",
     _PE, _PE_OTHER),
    ("msb", f"512:{hashlib.sha256(_PE[0x400:0x600]).hexdigest()}:Syn.Section.SHA256:73",
     _PE, PAD + _PE[0x400:0x600]),
    ("hdb", f"{hashlib.md5(_HASHED).hexdigest()}:{len(_HASHED)}:Syn.Hash.MD5",
     _HASHED, _HASHED_MISS),
    ("hsb", f"{hashlib.sha1(_HASHED + b'1').hexdigest()}:{len(_HASHED) + 1}:Syn.Hash.SHA1",
     _HASHED + b"1", _HASHED + b"2"),
    ("hsb", f"{hashlib.sha256(_HASHED + b'22').hexdigest()}:{len(_HASHED) + 2}:Syn.Hash.SHA256",
     _HASHED + b"22", _HASHED + b"23"),
    ("hsb", f"{hashlib.sha256(_HASHED + b'333').hexdigest()}:*:Syn.Hash.AnySize:73",
     _HASHED + b"333", _HASHED + b"334"),
]


def case_name(line: str) -> str:
    """The signature name a case line defines."""
    if ";" in line and line.index(";") < line.find(":"):
        return line.split(";")[0]
    fields = line.split(":")
    for candidate in fields[:2]:  # hash first (.hdb/.hsb) or size first (.mdb/.msb)
        if len(candidate) in (32, 40, 64) and all(c in "0123456789abcdef" for c in candidate):
            return fields[2]
    return fields[0]


def database_files(cases=CASES) -> dict[str, str]:
    files: dict[str, list[str]] = {}
    for ext, line, _, _ in cases:
        files.setdefault(f"cases.{ext}", []).append(line)
    return {name: "\n".join(lines) + "\n" for name, lines in files.items()}
